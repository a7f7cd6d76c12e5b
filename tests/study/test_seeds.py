"""study.seeds: every condition repeated over extra seeds (plan, identity, report), without training.

plan_before_seeds.json holds the step lists the plan made before study.seeds existed, for a few
settings: with no extra seed the plan must make exactly those (finished study folders stay valid)."""

import json
import statistics
from pathlib import Path

import pytest

from synthmed_lightning.errors import ConfigError
from synthmed_lightning.stages.study import _check_identity, build_plan, study_identity
from synthmed_lightning.study.plan import StudyPlan, setting_of
from synthmed_lightning.study.report import markdown, seed_results

BEFORE_SEEDS = Path(__file__).with_name("plan_before_seeds.json")


def _plan(out: Path, **kwargs) -> StudyPlan:
    settings = dict(out=out, real_data={"name": "drive", "root": "/data/DRIVE"},
                    real_data_args=["data=drive", "data.root=/data/DRIVE"], common_args=["profile=quick", "seed=42"],
                    num_synthetic=200, audit=False, seed=42)
    return StudyPlan(**{**settings, **kwargs})


def _seeds_of(step) -> list[str]:
    return [a for a in step.arguments if setting_of(a) == "seed"]


@pytest.mark.parametrize("variant", json.loads(BEFORE_SEEDS.read_text()))
def test_without_extra_seeds_the_plan_is_the_one_before_seeds(variant):
    recorded = json.loads(BEFORE_SEEDS.read_text())[variant]
    settings = dict(recorded["settings"])
    if "conditions" in settings:
        settings["conditions"] = tuple(settings["conditions"])
    steps = _plan(Path("/study/out"), synthetic_augmentation="default", **settings).steps()  # as before it existed
    assert [{"name": s.name, "stage": s.stage, "arguments": list(s.arguments), "after": list(s.after),
             "output": s.output} for s in steps] == recorded["steps"]


def test_each_extra_seed_repeats_every_condition_with_its_own_seed(tmp_path):
    base = _plan(tmp_path, audit=True, synthetic_counts=[50]).steps()
    steps = _plan(tmp_path, audit=True, synthetic_counts=[50], seeds=(43, 44)).steps()
    assert [s for s in steps if s in base] == base  # the study's own steps, unchanged and in their order
    added = {s.name: s for s in steps if s not in base}
    for seed in (43, 44):
        names = {name for name in added if name.endswith(f"_s{seed}")}
        assert names == {f"{name}_s{seed}" for name in (
            "train_single", "train_mask", "train_image", "segment_real", "generate_dual_gan", "generate_single_gan",
            "generate_stage2_real_masks", "segment_dual_gan", "segment_single_gan", "segment_real_plus_dual_gan",
            "segment_stage2_real_masks")}  # no audit, no count sweep per seed
        for name in names:
            assert _seeds_of(added[name]) == [f"seed={seed}"]  # exactly one seed= each
            assert all(dep.endswith(f"_s{seed}") for dep in added[name].after)
        generate = added[f"generate_dual_gan_s{seed}"]
        assert f"mask_ckpt='{tmp_path}/runs/train_mask_s{seed}/checkpoints/last.ckpt'" in generate.arguments
        assert generate.output_path(tmp_path) == tmp_path / f"synthetic/dual_gan_s{seed}/manifest.json"
        mixed = " ".join(added[f"segment_real_plus_dual_gan_s{seed}"].arguments)
        assert f"root:'{tmp_path}/synthetic/dual_gan_s{seed}'" in mixed
    assert len(added) == 22
    assert all(_seeds_of(s) == ["seed=42"] for s in base)
    # Every step has its own run directory and every export its own folder.
    assert len({s.run_dir(tmp_path) for s in steps}) == len(steps)
    exports = [s.output_path(tmp_path).parent for s in steps if s.stage == "generate"]
    assert len(set(exports)) == len(exports) == 3 * 3 + 1


def test_the_seed_of_a_seed_step_wins_over_the_command_line_and_ablations(tmp_path):
    plan = _plan(tmp_path, conditions=("real",), common_args=["profile=quick", "++seed=7"],
                 overrides={"segment": ["seed=1", "model.lr=0.01"]}, seeds=(8,))
    by_name = {s.name: s for s in plan.steps()}
    assert _seeds_of(by_name["segment_real_s8"]) == ["seed=8"] and "model.lr=0.01" in by_name["segment_real_s8"].arguments


def test_build_plan_reads_study_seeds_without_the_study_seed(study_cfg):
    plan = build_plan(study_cfg("seed=7", "study.seeds=[7,8,8,9]", "study.conditions=[real]", "study.audit=false"))
    assert plan.seeds == (8, 9) and plan.seed == 7
    assert {s.name: _seeds_of(s) for s in plan.steps()} == {
        "segment_real": ["seed=7"], "segment_real_s8": ["seed=8"], "segment_real_s9": ["seed=9"]}
    same = build_plan(study_cfg("seed=7", "study.seeds=[7]", "study.conditions=[real]", "study.audit=false"))
    assert same.steps() == build_plan(study_cfg("seed=7", "study.conditions=[real]", "study.audit=false")).steps()
    with pytest.raises(ConfigError, match=r"study.seeds=\[-1\]: expected integers"):
        build_plan(study_cfg("study.seeds=[-1]"))


def _identity(cfg) -> dict:
    plan = build_plan(cfg)
    return study_identity(cfg, plan, plan.steps())


def test_a_finished_study_can_be_extended_with_seeds_but_not_changed(tmp_path, study_cfg):
    """Adding seeds keeps the study's finished steps (only steps in both are compared) and records
    every step the folder ever held, so a seed step that comes back must be the same."""
    out = tmp_path / "out"
    out.mkdir()
    _check_identity(out, _identity(study_cfg()))
    _check_identity(out, _identity(study_cfg("study.seeds=[43]")))  # extended: accepted
    recorded = json.loads((out / "study.json").read_text())
    assert recorded["seeds"] == [43] and "seed=43" in recorded["steps"]["train_mask_s43"]
    assert "segment_real" in recorded["steps"]
    _check_identity(out, _identity(study_cfg()))  # back to the study's seed alone: its steps still match
    assert "train_mask_s43" in json.loads((out / "study.json").read_text())["steps"]  # still recorded
    with pytest.raises(ConfigError, match=r"steps\.\w+: nothing there, profile\.mask\.iterations=50 now"):
        _check_identity(out, _identity(study_cfg("study.seeds=[43]", "profile.mask.iterations=50")))
    # A seed step recorded with other arguments is refused when it comes back.
    changed = json.loads((out / "study.json").read_text())
    changed["steps"]["train_mask_s43"].append("model.lr=0.5")
    (out / "study.json").write_text(json.dumps(changed))
    with pytest.raises(ConfigError, match=r"steps\.train_mask_s43: model\.lr=0\.5 there, nothing now"):
        _check_identity(out, _identity(study_cfg("study.seeds=[43]")))


def _metrics(out: Path, run: str, **values) -> None:
    (out / "runs" / run).mkdir(parents=True)
    (out / "runs" / run / "metrics.json").write_text(json.dumps({f"test/{k}": v for k, v in values.items()}))


def test_the_report_summarises_each_condition_over_seeds(tmp_path):
    f1 = {"real": [0.80, 0.82, 0.81], "dual_gan": [0.70, 0.74, None]}  # dual_gan's seed 44 unfinished
    for condition, values in f1.items():
        for suffix, value in zip(("", "_s43", "_s44"), values):
            if value is not None:
                _metrics(tmp_path, f"segment_{condition}{suffix}", f1_vessel=value, f1_macro=value + 0.1,
                         auc=0.95, specificity=0.97, accuracy=0.96)
    summary = seed_results(tmp_path, ["real", "dual_gan"], 42, (43, 44))
    real = summary["conditions"]["real"]["f1_vessel"]
    assert summary["seeds"] == [42, 43, 44]
    assert real["mean"] == pytest.approx(0.81) and real["std"] == pytest.approx(statistics.stdev([0.80, 0.82, 0.81]))
    assert real["n"] == 3 and real["values"] == {"42": 0.80, "43": 0.82, "44": 0.81}
    dual = summary["conditions"]["dual_gan"]
    assert dual["f1_vessel"]["n"] == 2 and dual["auc"]["std"] == pytest.approx(0.0)
    assert set(dual) == {"f1_vessel", "f1_macro", "auc", "specificity"}
    assert summary["ratio_dual_over_real"] == pytest.approx(0.72 / 0.81)

    results = {"dataset": "DRIVE", "profile": "quick", "timing_s": {}, "ratio_dual_over_real": 0.70 / 0.80,
               "segmentation": {"real": {"f1_vessel": 0.80}, "dual_gan": {"f1_vessel": 0.70}}, "seeds": summary}
    report = markdown(results, {}, tmp_path)
    assert "| condition | f1_vessel | f1_macro | AUC | specificity | paper F1 |" in report
    assert f"| real | 0.8100 ± {statistics.stdev([0.80, 0.82, 0.81]):.4f} (3) |" in report
    assert "| dual_gan | 0.7200 ± 0.0283 (2) |" in report
    assert "| dual_gan | 0.7000 | 0.7400 | – |" in report  # f1_vessel per seed
    assert f"means: **{0.72 / 0.81:.3f}** (study's seed alone: {0.70 / 0.80:.3f}; paper: 0.988)" in report
    # One seed: the table as before.
    del results["seeds"]
    assert "| condition | f1_vessel | f1_macro | AUC | accuracy | paper F1 |" in markdown(results, {}, tmp_path)
