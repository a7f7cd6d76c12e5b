"""stage=single (the single-GAN baseline: noise -> RGB image + vessel mask) through the CLI on the
phantom, and the `SingleGAN.generate` API the synthetic-dataset export relies on."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers import assert_one_line_error, run_cli, smoke_run
from synthmed_lightning.checkpoints import load_checkpoint, restore_module
from synthmed_lightning.errors import CheckpointError
from synthmed_lightning.models.single_gan import SingleGAN

ITERATIONS, VAL_EVERY, SIZE, NUM_SAMPLES = 100, 50, 32, 8  # conf/profile/smoke.yaml `single:`


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    return smoke_run(tmp_path_factory, "single")


@pytest.fixture(scope="module")
def model(single_run) -> SingleGAN:
    return restore_module(SingleGAN, load_checkpoint(single_run / "checkpoints" / "last.ckpt", "single"))


def test_single_run_writes_checkpoint_grids_and_metrics(single_run):
    assert (single_run / ".hydra" / "config.yaml").is_file()
    checkpoint = load_checkpoint(single_run / "checkpoints" / "last.ckpt", "single")
    assert checkpoint["global_step"] == 2 * ITERATIONS
    for name in ("latest.png", "real.png", f"step_{VAL_EVERY:06d}.png", f"step_{ITERATIONS:06d}.png"):
        assert (single_run / "samples" / name).is_file(), name
    grid = cv2.imread(str(single_run / "samples" / "latest.png"))
    assert grid.shape[:2] == (2 * (SIZE + 2) + 2, 4 * (2 * SIZE + 2) + 2)  # 8 samples of image | mask, 4 columns
    metrics = json.loads((single_run / "metrics.json").read_text())
    for key in ("vessel_fraction", "real_vessel_fraction", "pairwise_iou", "copy_iou_max", "components",
                "mean_r", "mean_g", "mean_b", "real_mean_g", "vessel_contrast", "real_vessel_contrast"):
        assert np.isfinite(metrics[f"val/{key}"]), key
    for key in ("train/g_loss_first", "train/g_loss_last", "train/d_loss_first", "train/d_loss_last"):
        assert np.isfinite(metrics[key]), key
    assert metrics["train/iterations"] == ITERATIONS and metrics["train/steps"] == 2 * ITERATIONS


def test_single_gan_learned_the_fundus_colours(single_run):
    """An untrained generator's image is mid-grey noise; after 100 iterations the mean colour
    inside the FOV has closed most of the gap to the real images' (reddish, dark blue)."""
    m = json.loads((single_run / "metrics.json").read_text())

    def gap(prefix: str) -> float:
        return sum(abs(m[f"{prefix}/mean_{c}"] - m[f"{prefix}/real_mean_{c}"]) for c in "rgb")

    assert gap("val") < 0.5 * gap("init")
    assert m["val/mean_r"] > m["val/mean_b"]  # red fundus, as the phantom
    assert m["train/d_loss_last"] > 0.3


def test_generate_image_mask_fov(model):
    out = model.generate(3, seed=7)
    assert set(out) == {"image", "mask", "fov"}
    assert out["image"].shape == (3, 3, SIZE, SIZE)
    assert out["image"].min() >= -1 and out["image"].max() <= 1
    for key in ("mask", "fov"):
        assert out[key].shape == (3, 1, SIZE, SIZE)
        assert set(torch.unique(out[key]).tolist()) <= {0.0, 1.0}
    assert torch.all(out["mask"] <= out["fov"])
    outside = out["fov"].expand_as(out["image"]) == 0
    assert torch.all(out["image"][outside] == -1)  # black outside the FOV, as Stage I + II
    assert out["image"][~outside].std() > 0
    again = model.generate(3, seed=7)
    assert all(torch.equal(out[k], again[k]) for k in out)
    assert not torch.equal(out["image"], model.generate(3, seed=8)["image"])


def test_checkpoint_restores_the_final_ema_generator(single_run, model):
    metrics = json.loads((single_run / "metrics.json").read_text())
    out = model.generate(NUM_SAMPLES, model.hparams.sample_seed)
    fov = out["fov"][0, 0].bool()
    red = float(((out["image"][:, 0] + 1) / 2)[:, fov].mean())
    assert red == pytest.approx(metrics["val/mean_r"], abs=1e-5)
    with pytest.raises(CheckpointError, match="expected a stage=mask checkpoint"):
        load_checkpoint(single_run / "checkpoints" / "last.ckpt", "mask")


def test_export_from_a_checkpoint_with_the_old_flat_network_settings_fails_in_one_line(single_run, tmp_path):
    """A checkpoint of the previous version (flat z_dim, base_channels, ... instead of `generator` and
    `discriminator` dicts) cannot be rebuilt: stage=generate says so in one line."""
    from test_mask_stage import old_style_hparams

    checkpoint = load_checkpoint(single_run / "checkpoints" / "last.ckpt", "single")
    checkpoint["hyper_parameters"] = old_style_hparams(checkpoint["hyper_parameters"])
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    assert_one_line_error(run_cli("stage=generate", "profile=smoke", f"single_ckpt={old}", "num_samples=2",
                                  f"out_dir={tmp_path / 'export'}", f"hydra.run.dir={tmp_path / 'run'}"),
                          "checkpoint settings do not fit this version's SingleGAN")
