"""Every experiments/<name>.yaml composes with `+experiment=<name>` and says what it promises."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from synthmed_lightning.config import group_options, register_configs
from synthmed_lightning.resources import config_dir


def _compose(*overrides: str):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("name", group_options("experiment"))
def test_experiment_composes_and_resolves(name):
    cfg = _compose(f"+experiment={name}", "profile=smoke")
    for key in ("profile", "model", "data", "study"):  # (paths.output_dir needs a running Hydra app)
        if cfg.get(key) is not None:
            OmegaConf.to_container(cfg[key], resolve=True)
    assert cfg.stage


def test_study_experiments_target_their_stage():
    cfg = _compose("+experiment=ablation_no_l1")
    assert cfg.stage == "study" and list(cfg.study.overrides.image) == ["model.l1_weight=0"]
    cfg = _compose("+experiment=ablation_loss", "gan_loss=lsgan")
    assert list(cfg.study.overrides.mask) == ["model.loss=lsgan"] and "lsgan" in cfg.study.out_dir
    cfg = _compose("+experiment=ablation_mask_resolution", "mask_size=64")
    assert list(cfg.study.overrides.mask) == ["profile.mask.image_size=64"]
    cfg = _compose("+experiment=synthetic_count")
    assert list(cfg.study.synthetic_counts) == [50, 200, 1000]
    cfg = _compose("+experiment=paper")
    assert cfg.profile.name == "paper" and cfg.trainer.accelerator == "gpu" and cfg.stage == "study"
    cfg = _compose("+experiment=sweep_segment_lr")
    assert cfg.stage == "segment" and "model.lr" in cfg.hydra.sweeper.params
