"""report.md's presentation: the overlay legend, the not-comparable line, counts, wall time, a zero ratio.
Fake study folders, no training."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf

from synthmed_lightning.study import report
from synthmed_lightning.study.plan import Step, StudyPlan
from synthmed_lightning.visualize import FN_COLOUR, FP_COLOUR, TP_COLOUR, save_png


def _metrics(out: Path, run: str, values: dict) -> None:
    (out / "runs" / run).mkdir(parents=True, exist_ok=True)
    (out / "runs" / run / "metrics.json").write_text(json.dumps(values))


def _hydra_config(out: Path, run: str, config: dict) -> None:
    (out / "runs" / run / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(config), out / "runs" / run / ".hydra" / "config.yaml")


def _overlay(out: Path, condition: str) -> None:
    """A prediction overlay without any of the overlay colours (grey), as the segment stage writes it."""
    save_png(out / "runs" / f"segment_{condition}" / "predictions" / "01_test_overlay.png",
             np.full((64, 64, 3), 90, np.uint8))


def _has_colour(image: np.ndarray, colour) -> bool:
    return bool(np.all(image == np.array(colour, np.uint8), axis=-1).any())


def test_the_overlays_figure_has_a_legend_of_the_overlay_colours(tmp_path):
    for condition in ("real", "dual_gan"):
        _overlay(tmp_path, condition)
    path = report.overlays_figure(tmp_path, ["real", "dual_gan"], tmp_path / "figures" / "overlays.png")
    figure = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert figure.shape[0] > 24 + report._TILE_HEIGHT  # the tiles' banner and picture, then the legend
    legend = figure[-24:]
    assert all(_has_colour(legend, c) for c in (TP_COLOUR, FP_COLOUR, FN_COLOUR))


@pytest.fixture
def smoke_study(tmp_path, monkeypatch):
    """write_report on a smoke study of the phantom: dual GAN F1 0, Stage I counts, the study's wall time."""
    _metrics(tmp_path, "segment_real", {"test/f1_vessel": 0.8, "test/f1_macro": 0.88, "test/auc": 0.93,
                                        "test/accuracy": 0.95})
    _metrics(tmp_path, "segment_dual_gan", {"test/f1_vessel": 0.0, "test/f1_macro": 0.46, "test/auc": 0.5,
                                            "test/accuracy": 0.86})
    _metrics(tmp_path, "train_mask", {"val/vessel_fraction": 0.2918, "val/components": 81.375, "val/real_components": 5,
                                      "anatomy/branch_points": 80.3125, "anatomy_real/branch_points": 13.6667,
                                      "anatomy_vs_real/branch_points": 4.8765, "anatomy_real_halves/branch_points": 0.0821,
                                      "anatomy_vs_real/orientation_hist": 0.0753,
                                      "anatomy_real_halves/orientation_hist": 0.0312})
    _overlay(tmp_path, "real")
    for condition, augmentation in (("real", "default"), ("dual_gan", "strong")):  # as Hydra records each run's config
        _hydra_config(tmp_path, f"segment_{condition}", {"data": {"augmentation": augmentation}})
    # The data, the exports and the distances are not what these tests are about.
    monkeypatch.setattr(report, "read_dataset", lambda *args: [])
    monkeypatch.setattr(report, "read_exports", lambda plan: {})
    monkeypatch.setattr(report, "fidelity", lambda *args: {"kl": {"dual_gan": 1.1246, "real_subset": 0.1494}})
    cfg = OmegaConf.create({"profile": {"name": "smoke"}, "study": {"fidelity_tiles": 1}})
    plan = StudyPlan(out=tmp_path, real_data={"name": "phantom", "root": str(tmp_path)}, real_data_args=[],
                     common_args=[], num_synthetic=8, audit=False)
    steps = [Step(f"segment_{c}", "segment", ()) for c in ("real", "dual_gan")]
    results = report.write_report(cfg, plan, steps, {"segment_real": 24.0, "study_wall_s": 41 * 60.0})
    return results, (tmp_path / "report.md").read_text()


def test_a_zero_dual_gan_f1_gives_a_ratio_of_zero(smoke_study):
    results, text = smoke_study
    assert results["ratio_dual_over_real"] == 0.0
    assert "Ratio dual GAN / real, f1_vessel: **0.000**" in text


def test_over_seeds_a_zero_dual_gan_mean_gives_a_ratio_of_zero(tmp_path):
    for condition, f1 in (("real", 0.8), ("dual_gan", 0.0)):
        _metrics(tmp_path, f"segment_{condition}", {"test/f1_vessel": f1})
        _metrics(tmp_path, f"segment_{condition}_s43", {"test/f1_vessel": f1})
    seeds = report.seed_results(tmp_path, ["real", "dual_gan"], 42, (43,))
    assert seeds["ratio_dual_over_real"] == 0.0
    results = {"dataset": "DRIVE", "profile": "quick", "timing_s": {}, "segmentation": {}, "seeds": seeds,
               "ratio_dual_over_real": 0.0}
    assert "means: **0.000** (study's seed alone: 0.000; paper: 0.988)" in report.markdown(results, {}, tmp_path)


def test_a_smoke_report_says_it_is_not_comparable_with_the_paper(smoke_study):
    _, text = smoke_study
    top = text.split("| condition |")[0]
    assert "**Not comparable with the paper:** profile `smoke` on PHANTOM only checks that the pipeline runs" in top
    assert "paper F1" not in text and "paper KL" not in text and "(paper: 0.988)" not in text


@pytest.mark.parametrize("dataset, profile, comparable", [("DRIVE", "quick", True), ("DRIVE", "smoke", False),
                                                          ("STARE", "paper", False)])
def test_the_paper_columns_only_beside_drive_results_of_a_real_profile(tmp_path, dataset, profile, comparable):
    results = {"dataset": dataset, "profile": profile, "timing_s": {}, "ratio_dual_over_real": 0.9,
               "segmentation": {"real": {"f1_vessel": 0.8}, "dual_gan": {"f1_vessel": 0.72}}}
    text = report.markdown(results, {}, tmp_path)
    assert ("| condition | f1_vessel | f1_macro | AUC | accuracy | paper F1 |" in text) == comparable
    assert ("(paper: 0.988)" in text) == comparable
    assert ("Not comparable with the paper" in text) != comparable
    if dataset == "STARE":
        assert "these are STARE results, the paper's are DRIVE's" in text


def test_counts_are_counts_and_metrics_keep_four_decimals(smoke_study):
    _, text = smoke_study
    assert "| components | 81.4 | 5 |" in text  # a mean count, a count
    assert "| branch_points | 80.3 | 13.7 | 4.8765 | 0.0821 |" in text  # the relative difference is a metric
    assert "| orientation_hist | – | – | 0.0753 | 0.0312 |" in text  # a distance between histograms
    assert "| vessel_fraction | 0.2918 | – |" in text
    assert "| real | 0.8000 | 0.8800 | 0.9300 | 0.9500 |" in text


def test_the_study_wall_time_is_a_line_not_a_step(smoke_study):
    results, text = smoke_study
    assert "study_wall_s" not in text and "Study wall time: 41.0 min." in text
    assert "| segment_real | 0.4 min |" in text
    assert results["timing_s"]["study_wall_s"] == 41 * 60.0  # results.json keeps it
    assert "![overlays](figures/overlays.png)" in text


def test_the_report_says_which_augmentation_each_u_net_trained_with(smoke_study):
    results, text = smoke_study
    assert results["augmentation"] == {"real": "default", "dual_gan": "strong"}  # read from each run's own config
    assert "U-Net training augmentation (`data.augmentation`): real `default`, dual_gan `strong`." in text
