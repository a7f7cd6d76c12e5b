"""experiment=data_efficiency: U-Nets on k real images, with and without the dual-GAN export
(plan, checks, report section), without training."""

import json
import statistics
from pathlib import Path

import pytest

from synthmed_lightning.errors import ConfigError
from synthmed_lightning.stages.study import _check_efficiency_counts, build_plan
from synthmed_lightning.study.efficiency import (DataEfficiency, EfficiencyRun, choose_share, efficiency_markdown,
                                                 efficiency_plot, efficiency_results)
from synthmed_lightning.study.plan import setting_of


@pytest.fixture
def experiment(tmp_path, cli_config):
    """The experiment's config on DRIVE, composed as under the CLI."""
    return lambda *overrides: cli_config("experiment=data_efficiency", "data=drive", "data.root=/data/DRIVE",
                                         f"study.out_dir={tmp_path / 'out'}", *overrides)


def _settings(step) -> dict[str, list[str]]:
    found = {}
    for argument in step.arguments:
        found.setdefault(setting_of(argument), []).append(argument.split("=", 1)[1])
    return found


def test_the_experiment_plans_one_unet_per_count_draw_and_share(experiment, tmp_path):
    plan = build_plan(experiment("data.extra_train_share=0.2"))  # a command-line share must not leak in
    efficiency = [s for s in plan.steps() if s.name.startswith("efficiency_")]
    # k = 1, 2, 4: 3 draws; k = 8, 16: 1 draw; each a real-only U-Net and one per share (0.1, 0.5).
    assert len(efficiency) == plan.data_efficiency.unet_count() == (3 * 3 + 2) * 3
    by_name = {s.name: s for s in efficiency}
    assert {"efficiency_k1_draw2_real", "efficiency_k4_draw2_share0.5", "efficiency_k16_draw0_share0.1"} <= set(by_name)
    assert "efficiency_k8_draw1_real" not in by_name
    export = f"[{{name:'folder',root:'{tmp_path}/out/synthetic/dual_gan'}}]"
    mixed = _settings(by_name["efficiency_k2_draw1_share0.5"])
    assert mixed["data.train_count"] == ["2"] and mixed["data.train_draw"] == ["1"]
    assert mixed["data.extra_train"] == [export] and mixed["data.extra_train_share"] == ["0.5"]
    assert mixed["stage"] == ["segment"] and mixed["data"] == ["drive"]
    assert by_name["efficiency_k2_draw1_share0.5"].after == ("generate_dual_gan",)
    real = _settings(by_name["efficiency_k2_draw1_real"])
    assert real["data.train_count"] == ["2"] and "data.extra_train" not in real
    assert by_name["efficiency_k2_draw1_real"].after == ()
    assert {"train_mask", "train_image", "generate_dual_gan", "segment_real", "segment_real_plus_dual_gan"} <= \
        {s.name for s in plan.steps()}


def _check(cfg, train_images: int) -> None:
    _check_efficiency_counts(cfg, build_plan(cfg), train_images)


def test_counts_beyond_the_training_images_or_without_the_export_are_one_line(experiment):
    _check(experiment(), 20)  # DRIVE: 20 training images, 4 held out, 16 left
    with pytest.raises(ConfigError, match=r"study.data_efficiency.counts=\[1, 2, 4, 8, 16\]: at most 14 "
                                          r"\(the 20 training images of drive minus 6 held out"):
        _check(experiment("data.val_count=6"), 20)
    with pytest.raises(ConfigError, match=r"at most 10 \(the 20 training images of drive minus 10 held out"):
        _check(experiment("study.overrides.segment=['data.val_count=10']"), 20)
    with pytest.raises(ConfigError, match="study.data_efficiency needs the dual_gan export"):
        build_plan(experiment("study.conditions=[real]"))
    with pytest.raises(ConfigError, match=r"study.data_efficiency.shares=\[0.1, 1.0\]"):
        build_plan(experiment("study.data_efficiency.shares=[0.1,1.0]"))
    assert build_plan(experiment("study.data_efficiency.counts=[]")).data_efficiency is None
    # The count sweep sizes the same export: without it, one line instead of a scheduler's ValueError.
    with pytest.raises(ConfigError, match=r"study.synthetic_counts=\[50\] sizes the dual_gan export"):
        build_plan(experiment("study.data_efficiency.counts=[]", "study.conditions=[real]", "study.synthetic_counts=[50]"))


def test_the_share_is_chosen_on_validation():
    assert choose_share({0.1: 0.70, 0.5: 0.72}) == 0.5
    assert choose_share({0.1: 0.72, 0.5: 0.72}) == 0.1  # a tie keeps the smaller share
    assert choose_share({0.1: None}) is None


def _metrics(runs: Path, run: EfficiencyRun, test_f1: float, val_f1: float) -> None:
    (runs / run.name).mkdir(parents=True)
    (runs / run.name / "metrics.json").write_text(json.dumps(
        {"test/f1_vessel": test_f1, "test/f1_macro": test_f1 + 0.1, "test/auc": 0.9, "test/specificity": 0.97,
         "val/best_f1_vessel": val_f1}))


def test_the_report_section_from_metrics_files(tmp_path):
    settings = DataEfficiency(counts=(1, 16), draws=2, draws_up_to=4, shares=(0.1, 0.5))
    runs = tmp_path / "runs"
    # k = 1: draw 0 prefers share 0.5 on validation, draw 1 share 0.1; k = 16: one draw, share 0.1.
    for draw, (real, low, high) in enumerate([(0.50, (0.60, 0.61), (0.64, 0.66)), (0.54, (0.62, 0.65), (0.70, 0.60))]):
        _metrics(runs, EfficiencyRun(1, draw), real, 0.5)
        _metrics(runs, EfficiencyRun(1, draw, 0.1), *low)
        _metrics(runs, EfficiencyRun(1, draw, 0.5), *high)
    _metrics(runs, EfficiencyRun(16, 0), 0.80, 0.8)
    _metrics(runs, EfficiencyRun(16, 0, 0.1), 0.79, 0.81)  # share 0.5 of k = 16 unfinished: left out
    results = efficiency_results(runs, settings)
    one = results["1"]
    assert one["chosen_share"] == {"0": 0.5, "1": 0.1}
    assert one["real"]["f1_vessel"]["mean"] == pytest.approx(0.52)
    assert one["with_synthetic"]["f1_vessel"]["values"] == {"0": 0.64, "1": 0.62}  # test F1 of each chosen share
    assert one["with_synthetic"]["f1_vessel"]["std"] == pytest.approx(statistics.stdev([0.64, 0.62]))
    assert one["gain_f1_vessel"] == pytest.approx(0.63 - 0.52)
    assert results["16"]["draws"] == 1 and results["16"]["real"]["f1_vessel"]["std"] is None
    assert results["16"]["gain_f1_vessel"] == pytest.approx(-0.01)

    lines = "\n".join(efficiency_markdown(results, "figures/f1_vs_real_count.png"))
    assert "generators were trained on all the real training images" in lines
    assert f"| 1 | 0.5200 ± {statistics.stdev([0.50, 0.54]):.4f} (2) | 0.6300 ± 0.0141 (2) | +0.1100 | 0.5, 0.1 |" in lines
    assert "| 16 | 0.8000 (1) | 0.7900 (1) | -0.0100 | 0.1 |" in lines
    assert "![data efficiency](figures/f1_vs_real_count.png)" in lines
    plot = efficiency_plot(results, tmp_path / "figures" / "f1_vs_real_count.png")
    assert plot.is_file() and plot.stat().st_size > 1000
