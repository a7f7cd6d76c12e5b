"""Every experiments/<name>.yaml composes with `+experiment=<name>` and says what it promises."""

import pytest
from omegaconf import OmegaConf

from helpers import compose_config
from synthmed_lightning.config import group_options


@pytest.mark.parametrize("name", group_options("experiment"))
def test_experiment_composes_and_resolves(name):
    cfg = compose_config(f"+experiment={name}", "profile=smoke")
    for key in ("profile", "model", "data", "study"):  # (paths.output_dir needs a running Hydra app)
        if cfg.get(key) is not None:
            OmegaConf.to_container(cfg[key], resolve=True)
    assert cfg.stage


def test_study_experiments_target_their_stage():
    cfg = compose_config("+experiment=ablation_no_l1")
    assert cfg.stage == "study" and list(cfg.study.overrides.image) == ["model.l1_weight=0"]
    cfg = compose_config("+experiment=ablation_loss", "gan_loss=lsgan")
    assert list(cfg.study.overrides.mask) == ["model.loss=lsgan"] and "lsgan" in cfg.study.out_dir
    cfg = compose_config("+experiment=ablation_mask_resolution", "mask_size=128")
    assert list(cfg.study.overrides.mask) == ["profile.mask.image_size=128", "profile.mask.join_gap=3.0"]
    cfg = compose_config("+experiment=stage1_128px")
    assert {"profile.mask.image_size=128", "profile.mask.join_gap=3.0"} <= set(cfg.study.overrides.mask)
    quick = compose_config("profile=quick").profile.mask
    assert (quick.image_size, quick.soft_masks, quick.coverage_power, quick.join_gap, quick.max_vessel_width,
            quick.layout_rotation, quick.thin_threshold) == (64, True, 0.5, 1.5, "fit", 10.0, 0.2)  # what it is compared with
    cfg = compose_config("+experiment=synthetic_count")
    assert list(cfg.study.synthetic_counts) == [50, 200, 1000]
    cfg = compose_config("+experiment=paper")
    assert cfg.profile.name == "paper" and cfg.trainer.accelerator == "gpu" and cfg.stage == "study"
    # paper-faithful: the published DCGAN without this project's mask refiner, edge fade and turned layouts,
    # pix2pix as published
    for name in ("paper", "pix2pix_published"):
        overrides = compose_config(f"experiment={name}").study.overrides
        assert list(overrides.mask) == ["model.refiner=null", "edge_fade=false", "model.layout_rotation=0"]
        assert "model.vessel_critic=null" in overrides.image
    cfg = compose_config("stage=mask", "model.refiner=null", "edge_fade=false", "model.layout_rotation=0")
    assert cfg.model.refiner is None and cfg.edge_fade is False and cfg.model.layout_rotation == 0
    cfg = compose_config("+experiment=sweep_segment_lr")
    assert cfg.stage == "segment" and "model.lr" in cfg.hydra.sweeper.params
