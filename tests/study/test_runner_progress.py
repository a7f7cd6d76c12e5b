"""The study's overall progress line (study/runner.py: StudyProgress): counts, running steps, ETA."""

from synthmed_lightning.study.plan import Step
from synthmed_lightning.study.runner import StudyProgress


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _step(name: str, stage: str) -> Step:
    return Step(name, stage, ())


def test_progress_line_counts_steps_and_estimates_the_rest_by_stage():
    clock = _Clock()
    mask, segment, segment2, generate = (_step("train_mask", "mask"), _step("segment_real", "segment"),
                                         _step("segment_dual", "segment"), _step("generate_dual", "generate"))
    progress = StudyProgress(total=4, done=0, workers=2, clock=clock)
    assert "ETA after the first step" in progress.line([generate], {"train_mask": (0.0, mask)})
    clock.now = 600.0
    progress.finished(segment, 600.0)  # a U-Net took 10 min
    clock.now = 700.0
    # running: the mask GAN (no finished mask step: the mean of all finished, 600 s; 500 s elapsed, 100 s
    # left) and a second U-Net started at 600 s (500 s left); pending: one export (600 s). / 2 workers.
    running = {"train_mask": (200.0, mask), "segment_dual": (600.0, segment2)}
    assert progress.eta_s([generate], running) == (100 + 500 + 600) / 2
    line = progress.line([generate], running)
    assert line.startswith("study: 1/4 steps done, running train_mask, segment_dual; elapsed 11 min 40 s")
    assert line.endswith("ETA 10 min 0 s")


def test_progress_is_reported_once_a_minute(caplog):
    clock = _Clock()
    progress = StudyProgress(total=2, done=1, workers=1, clock=clock)
    with caplog.at_level("INFO", logger="synthmed_lightning.study.runner"):
        for now in (10.0, 59.0, 61.0, 90.0, 125.0):
            clock.now = now
            progress.maybe_report([], {})
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["study: 1/2 steps done"] * 2


def test_a_resumed_step_counts_as_done_but_not_as_a_duration():
    """A step resumed from its checkpoint ran only its last part: its wall time would skew the estimate."""
    clock = _Clock()
    segment, segment2 = _step("segment_real", "segment"), _step("segment_dual", "segment")
    progress = StudyProgress(total=3, done=0, workers=1, clock=clock)
    progress.finished(segment, 30.0, resumed=True)
    assert progress.done == 1 and "ETA after the first step" in progress.line([segment2], {})
    progress.finished(segment2, 600.0)
    assert progress.eta_s([_step("segment_more", "segment")], {}) == 600.0
