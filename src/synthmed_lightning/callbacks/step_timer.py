"""Training-step times, so a run (and `make bench`) can tell the step's cost from everything around it."""

import statistics
import time

import lightning as L


class StepTimer(L.Callback):
    """Wall time of each training batch after `warmup` batches: `step` from batch start to end (the
    training step: forward, backward, optimizer, logging) and `batch` from one batch end to the next
    (the step plus data loading; validation and checkpointing fall in a few of these, hence medians).
    For the GAN stages a batch is one generator iteration (a D and a G step). Lightning's
    ThroughputMonitor does not replace it: docs/design.md, "Hand-written code that stays, and why"."""

    def __init__(self, warmup: int = 5):
        self.warmup = warmup
        self.step_s: list[float] = []
        self.batch_s: list[float] = []
        self._start = self._last_end = None
        self._seen = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self._seen += 1
        if self._seen > self.warmup:
            self.step_s.append(now - self._start)
            if self._last_end is not None:
                self.batch_s.append(now - self._last_end)
        self._last_end = now

    def summary(self) -> dict[str, float]:
        """`time/step_s` and `time/batch_s`: medians over the timed batches (none: empty)."""
        out = {}
        for key, values in (("time/step_s", self.step_s), ("time/batch_s", self.batch_s)):
            if values:
                out[key] = statistics.median(values)
        return out


def step_timing(trainer: L.Trainer) -> dict[str, float]:
    """The summary of the trainer's StepTimer (conf/callbacks/default.yaml), if it has one."""
    timers = [c for c in trainer.callbacks if isinstance(c, StepTimer)]
    return timers[0].summary() if timers else {}
