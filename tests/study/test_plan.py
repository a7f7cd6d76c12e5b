"""The study's step plan and scheduler, without training anything."""

import json
import sys

import pytest

from synthmed_lightning.study.plan import Step, StudyPlan
from synthmed_lightning.study.runner import StepFailed, default_parallelism, run_steps


def _plan(tmp_path, **kwargs) -> StudyPlan:
    settings = dict(out=tmp_path, real_data={"name": "drive", "root": "/data/DRIVE"},
                    real_data_args=["data=drive", "data.root=/data/DRIVE"], common_args=["profile=quick"],
                    num_synthetic=200, audit=False)
    return StudyPlan(**{**settings, **kwargs})


def test_every_condition_gets_its_steps_in_dependency_order(tmp_path):
    steps = _plan(tmp_path).steps()
    names = [s.name for s in steps]
    assert set(names) == {"train_single", "train_mask", "train_image", "segment_real", "generate_dual_gan",
                          "generate_single_gan", "segment_dual_gan", "segment_single_gan", "segment_real_plus_dual_gan",
                          "generate_stage2_real_masks", "segment_stage2_real_masks"}
    for step in steps:  # a step comes after the steps it waits for
        assert all(names.index(dep) < names.index(step.name) for dep in step.after)
    by_name = {s.name: s for s in steps}
    dual = " ".join(by_name["segment_dual_gan"].arguments)
    assert "data=folder" in dual and "data.test={name:'drive',root:'/data/DRIVE'}" in dual
    mixed = " ".join(by_name["segment_real_plus_dual_gan"].arguments)
    assert "data=drive" in mixed and "data.extra_train=[{name:'folder'" in mixed
    assert by_name["generate_dual_gan"].output_path(tmp_path) == tmp_path / "synthetic/dual_gan/manifest.json"
    assert f"hydra.run.dir='{tmp_path}/runs/train_mask'" in by_name["train_mask"].arguments
    # Stage II alone: the study's own Stage II paints the real dataset's training masks.
    painting = by_name["generate_stage2_real_masks"]
    assert painting.after == ("train_image",)
    assert {"mask_source=real", "data=drive", "data.root=/data/DRIVE"} <= set(painting.arguments)
    assert not any(a.startswith("mask_ckpt=") for a in painting.arguments)


def test_only_what_the_conditions_need_and_count_sweeps(tmp_path):
    names = [s.name for s in _plan(tmp_path, conditions=("real",)).steps()]
    assert names == ["segment_real"]
    names = [s.name for s in _plan(tmp_path, conditions=("dual_gan",), synthetic_counts=[50, 200]).steps()]
    assert "train_single" not in names and "generate_dual_gan_n50" in names and "segment_dual_gan_n50" in names
    assert "generate_dual_gan_n200" not in names  # 200 is the main export
    audit = [s for s in _plan(tmp_path, conditions=("dual_gan",), audit=True).steps() if s.stage == "audit"]
    assert [s.name for s in audit] == ["audit_dual_gan"] and "segment_real" in audit[0].after


def test_ablation_overrides_reach_their_stage_only(tmp_path):
    steps = _plan(tmp_path, overrides={"image": ["model.l1_weight=0"]}).steps()
    for step in steps:
        assert ("model.l1_weight=0" in step.arguments) == (step.stage == "image")


def test_only_unets_on_a_synthetic_export_alone_get_the_synthetic_augmentation(tmp_path):
    for step in _plan(tmp_path, seeds=(43,), synthetic_counts=[50]).steps():
        augmentation = [a for a in step.arguments if a.startswith("data.augmentation=")]
        alone = step.stage == "segment" and "data=folder" in step.arguments
        assert augmentation == (["data.augmentation='strong'"] if alone else []), step.name
    # `default` leaves the command lines as they were, and one ablation still reaches every U-Net.
    steps = _plan(tmp_path, synthetic_augmentation="default", overrides={"segment": ["data.augmentation=none"]}).steps()
    for step in steps:
        assert ("data.augmentation=none" in step.arguments) == (step.stage == "segment")


def test_default_parallelism():
    assert default_parallelism(cuda=False, cpus=2) == (2, 1)
    assert default_parallelism(cuda=False, cpus=16) == (4, 4)
    assert default_parallelism(cuda=True, cpus=16) == (1, 16)


def _python_step(name: str, code: str, after=()) -> Step:
    return Step(name, "x", ("-c", code), tuple(after), output="done.txt")


def test_runner_runs_in_order_skips_finished_steps_and_reports_a_failure(tmp_path, monkeypatch):
    # Steps are plain python commands here: `python -c <code>` writing their output file.
    monkeypatch.setattr("synthmed_lightning.study.runner._command", lambda step: [sys.executable, *step.arguments])
    write = lambda name: f"import pathlib; p = pathlib.Path(r'{tmp_path}/runs/{name}'); p.mkdir(parents=True, exist_ok=True); (p / 'done.txt').write_text('ok')"  # noqa: E731
    steps = [_python_step("a", write("a")), _python_step("b", write("b"), after=["a"])]
    assert set(run_steps(steps, tmp_path, workers=2, threads=1)) == {"a", "b"}
    assert run_steps(steps, tmp_path, workers=2, threads=1) == {}  # all done: nothing reruns
    failing = [_python_step("c", "raise SystemExit('error: broken input')"), _python_step("d", write("d"), after=["c"])]
    with pytest.raises(StepFailed, match=r"study step c failed \(error: broken input\)"):
        run_steps(failing, tmp_path, workers=1, threads=1)
    assert not (tmp_path / "runs" / "d").exists()  # nothing after a failure starts


def test_dp_guarantees_add_up_the_stages_of_each_export(tmp_path):
    """An export's epsilon is the sum over the generators it needs (they read the same images);
    with one of them trained without DP the export has no total."""
    from synthmed_lightning.study.report import dp_guarantees

    def metrics(run, **values):
        (tmp_path / "runs" / run).mkdir(parents=True)
        (tmp_path / "runs" / run / "metrics.json").write_text(json.dumps(values))

    metrics("train_mask", **{"privacy/epsilon": 4.0, "privacy/delta": 1e-3})
    metrics("train_image", **{"privacy/epsilon": 6.0, "privacy/delta": 1e-3})
    metrics("train_single", **{"train/iterations": 10})
    guarantees = dp_guarantees(tmp_path)
    assert guarantees["dual_gan"] == {"train_mask": {"epsilon": 4.0, "delta": 1e-3},
                                      "train_image": {"epsilon": 6.0, "delta": 1e-3},
                                      "epsilon_total": 10.0, "delta_total": 2e-3}
    # Stage II on the real masks publishes real masks: no guarantee, whatever Stage II's.
    assert guarantees["stage2_real_masks"]["epsilon_total"] is None and set(guarantees) == {"dual_gan", "stage2_real_masks"}
    (tmp_path / "runs" / "train_image" / "metrics.json").write_text("{}")
    assert dp_guarantees(tmp_path)["dual_gan"]["epsilon_total"] is None


def test_the_decomposition_splits_the_cost_between_the_stages():
    from synthmed_lightning.study.report import decomposition

    seg = {"real": {"f1_vessel": 0.82, "specificity": 0.977, "auc": 0.978},
           "stage2_real_masks": {"f1_vessel": 0.72, "specificity": 0.935, "auc": 0.94},
           "dual_gan": {"f1_vessel": 0.71, "specificity": 0.931, "auc": 0.938}}
    costs = decomposition(seg)
    assert costs["Stage II (the painter)"]["f1_vessel_cost"] == pytest.approx(0.10)
    assert costs["Stage I (the masks)"]["f1_vessel_cost"] == pytest.approx(0.01)
    assert costs["Stage I (the masks)"]["specificity_cost"] == pytest.approx(0.004)
    assert decomposition({"real": seg["real"], "dual_gan": seg["dual_gan"]}) == {}
