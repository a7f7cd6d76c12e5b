"""`make reproduce-paper` (stage=study) end to end on the phantom with the smoke profile."""

import json
import math
import re
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import PROJECT_ROOT, SMOKE, assert_ok, assert_one_line_error, run_cli
from test_readme import quick_start_commands

CONDITIONS = ("real", "dual_gan", "single_gan", "real_plus_dual_gan", "stage2_real_masks")


def readme_study_command() -> list[str]:
    """The README's quick-start study line (`make reproduce-paper DATA=phantom PROFILE=smoke`), split."""
    (line,) = [c for c in quick_start_commands() if c.startswith("make reproduce-paper")]
    return shlex.split(line)


def make_reproduce_paper(out: Path, *args: str) -> subprocess.CompletedProcess:
    """The README's quick-start line, exactly, plus `OUT=<out>` (and `args`)."""
    if not (PROJECT_ROOT / ".venv" / ".installed").is_file():
        pytest.skip("make reproduce-paper runs in the project's .venv: run `make install` (or `make test`) first")
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    make, *goal_and_variables = readme_study_command()
    return subprocess.run([make, "-s", "-C", str(PROJECT_ROOT), *goal_and_variables, f"OUT={out}", *args],
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "out"
    assert_ok(make_reproduce_paper(out))
    return out


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.slow
def test_results_have_every_key_with_finite_values(study):
    results = json.loads((study / "results.json").read_text())
    assert results["profile"] == "smoke" and results["dataset"] == "PHANTOM"
    for condition in CONDITIONS:
        values = results["segmentation"][condition]
        assert {"f1_vessel", "f1_macro", "auc", "accuracy"} <= set(values)
        assert all(_finite(v) and 0 <= v <= 1 for v in values.values())
    assert set(results["kl"]) >= {"dual_gan", "single_gan", "real_subset"}
    assert set(results["frechet"]) >= {"dual_gan", "single_gan", "real_test"}
    assert all(_finite(v) and v >= 0 for v in [*results["kl"].values(), *results["frechet"].values()])
    assert all(_finite(v) and v > 0 for v in results["timing_s"].values())
    assert set(results["decomposition"]) == {"Stage II (the painter)", "Stage I (the masks)"}
    fidelity = results["painter_fidelity"]
    assert set(fidelity) == {"painted", "real"}
    for scores in fidelity.values():
        assert all(0 <= scores[k] <= 1 for k in ("f1_vessel", "specificity", "recall_thin", "recall_thick"))
        assert all(-1 <= scores[k] <= 1 for k in ("contrast_thin", "contrast_thick", "background_roughness"))
    assert fidelity["real"]["contrast_thick"] > 0  # the phantom's vessels are darker than its background
    # The U-Net on real data learned (smoke budget, phantom): well above chance.
    assert results["segmentation"]["real"]["auc"] > 0.8
    report = (study / "report.md").read_text()
    assert "| real |" in report and "0.8988" in report and "figures/samples.png" in report
    assert (study / "figures" / "samples.png").is_file() and (study / "figures" / "overlays.png").is_file()
    manifest = json.loads((study / "synthetic" / "dual_gan" / "manifest.json").read_text())
    assert manifest["count"] == 8


@pytest.mark.slow
def test_rerun_skips_finished_steps_and_redoes_a_missing_one(study):
    before = json.loads((study / "results.json").read_text())
    shutil.rmtree(study / "runs" / "segment_single_gan")
    result = make_reproduce_paper(study, "ARGS=logger=wandb run_group=smoke-study")
    assert_ok(result)
    log = result.stdout + result.stderr
    steps = int(re.search(r": (\d+) steps, ", log).group(1))  # 14: 3 GANs, 3 exports, 5 U-Nets, 3 audits
    assert log.count("already done, skipped") == steps - 1 and "segment_single_gan: started" in log
    after = json.loads((study / "results.json").read_text())
    assert after["segmentation"]["real"] == before["segmentation"]["real"]  # not retrained
    assert (study / "runs" / "segment_single_gan" / "metrics.json").is_file()


def test_a_study_folder_is_not_resumed_with_other_settings(tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"profile": "quick", "dataset": "phantom"}))
    result = run_cli("stage=study", *SMOKE, f"study.out_dir={tmp_path}")
    assert_one_line_error(result, "study.out_dir=", "profile")


def test_missing_drive_is_one_line_before_any_step(tmp_path):
    result = run_cli("stage=study", *SMOKE, "data=drive", f"data.root={tmp_path / 'nowhere'}",
                     f"study.out_dir={tmp_path / 'out'}")
    assert_one_line_error(result, "nowhere")
    assert not (tmp_path / "out" / "runs").exists()


def test_unknown_condition_is_one_line(tmp_path):
    result = run_cli("stage=study", *SMOKE, "study.conditions=[real,gan]", f"study.out_dir={tmp_path}")
    assert_one_line_error(result, "study.conditions")


@pytest.mark.slow
def test_wandb_groups_the_study_offline(study):
    # Runs after the rerun above (logger=wandb): the retrained step and the final study run log offline,
    # both in the study's W&B group; the study run holds the results table and the dataset artifacts.
    step_runs = list((study / "runs" / "segment_single_gan" / "wandb").glob("offline-run-*/run-*.wandb"))
    study_runs = list((study / "wandb").glob("offline-run-*/run-*.wandb"))
    assert step_runs and study_runs
    for run_file in (step_runs[0], study_runs[-1]):
        assert b"smoke-study" in run_file.read_bytes()
    study_bytes = study_runs[-1].read_bytes()
    assert b"results" in study_bytes and b"synthetic-dual_gan" in study_bytes
