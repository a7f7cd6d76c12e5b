"""`hparams_search=segment_optuna`: Hydra's Optuna sweeper over the U-Net's learning rate and width,
maximising the value the CLI's task function returns (`optimized_metric` from the stage's metrics)."""

import json

import pytest
from omegaconf import OmegaConf

from helpers import assert_ok, compose_config, run_cli

LR_RANGE = (1e-4, 1e-2)
WIDTHS = (8, 16, 32)


def test_search_composes_with_the_optuna_sweeper():
    cfg = compose_config("stage=segment", "profile=smoke", "hparams_search=segment_optuna")
    assert cfg.optimized_metric == "val/best_f1_vessel"
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "maximize"
    # The searched keys exist in the composed config: a renamed setting would otherwise be added silently.
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key


def test_objective_is_the_optimized_metric():
    from synthmed_lightning.cli import _objective
    from synthmed_lightning.errors import ConfigError

    metrics = {"val/best_f1_vessel": 0.5, "test/f1_vessel": 0.4}
    assert _objective(OmegaConf.create({"stage": "segment"}), metrics) is metrics
    searched = OmegaConf.create({"stage": "segment", "optimized_metric": "val/best_f1_vessel"})
    assert _objective(searched, metrics) == 0.5
    with pytest.raises(ConfigError, match="optimized_metric=val/nope"):
        _objective(OmegaConf.merge(searched, {"optimized_metric": "val/nope"}), metrics)
    with pytest.raises(ConfigError, match="optimized_metric"):
        _objective(searched, None)


@pytest.mark.slow  # two smoke segment trainings (~15-30 s each)
def test_optuna_search_on_smoke(tmp_path):
    sweep = tmp_path / "sweep"
    assert_ok(run_cli("--multirun", "stage=segment", "profile=smoke", "hparams_search=segment_optuna",
                      "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"))
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    params = results.best_params
    assert set(params) == {"model.lr", "model.net.base_channels"}
    assert LR_RANGE[0] <= params["model.lr"] <= LR_RANGE[1]
    assert params["model.net.base_channels"] in WIDTHS
    assert 0.0 <= results.best_value <= 1.0
    # The sweeper saw each trial's validation F1 from its metrics.json.
    trials = [json.loads((sweep / str(i) / "metrics.json").read_text())["val/best_f1_vessel"] for i in range(2)]
    assert results.best_value == pytest.approx(max(trials))
