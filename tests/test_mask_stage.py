"""stage=mask (Stage I, DCGAN noise -> vessel mask) through the CLI on the phantom, its data, and
the `MaskGAN.generate` API the synthetic-dataset export relies on."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers import SMOKE, assert_ok, compose_config, run_cli, smoke_run
from synthmed_lightning.checkpoints import load_checkpoint, restore_module
from synthmed_lightning.data.mask_data import MaskDataModule, fov_to_native, from_square, square_resize_binary, to_square
from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.errors import CheckpointError, ConfigError
from synthmed_lightning.models.mask_gan import MaskGAN
from synthmed_lightning.metrics.mask_stats import width_quantile
from synthmed_lightning.stages.mask import WIDTH_QUANTILE, NoiseGANStage, max_vessel_width, native_diversity

ITERATIONS, VAL_EVERY, SIZE, NUM_SAMPLES = 100, 50, 32, 8  # conf/profile/smoke.yaml `mask:`
PHANTOM = {"name": "phantom", "reader": {"count": 6, "seed": 0, "height": 96, "width": 96}}
DCGAN = "synthmed_lightning.models.components.dcgan."


def mask_gan(z_dim: int = 100, image_size: int = 32, base_channels: int = 4, spectral_norm: bool = False,
             generator_spectral_norm: bool | None = None, **settings) -> MaskGAN:
    """A small Stage I module: the networks of conf/model/_dcgan.yaml at the given size."""
    g_norm = spectral_norm if generator_spectral_norm is None else generator_spectral_norm
    return MaskGAN(generator={"_target_": DCGAN + "DCGANGenerator", "z_dim": z_dim, "out_channels": 1,
                              "image_size": image_size, "base_channels": base_channels, "upsample": "transpose",
                              "spectral_norm": g_norm},
                   discriminator={"_target_": DCGAN + "MultiScaleDiscriminator", "in_channels": 1,
                                  "image_size": image_size, "base_channels": base_channels,
                                  "spectral_norm": spectral_norm},
                   **settings)


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory) -> Path:
    return smoke_run(tmp_path_factory, "mask")


@pytest.fixture(scope="module")
def model(mask_run) -> MaskGAN:
    return restore_module(MaskGAN, load_checkpoint(mask_run / "checkpoints" / "last.ckpt", "mask"))


def test_mask_run_writes_checkpoint_grids_and_metrics(mask_run):
    assert (mask_run / ".hydra" / "config.yaml").is_file()
    checkpoint = load_checkpoint(mask_run / "checkpoints" / "last.ckpt", "mask")
    assert checkpoint["global_step"] == 2 * ITERATIONS  # one D + one G optimizer step per iteration
    for name in ("latest.png", "real.png", f"step_{VAL_EVERY:06d}.png", f"step_{ITERATIONS:06d}.png"):
        assert (mask_run / "samples" / name).is_file(), name
    grid = cv2.imread(str(mask_run / "samples" / "latest.png"))
    assert grid.shape[:2] == (2 * (SIZE + 2) + 2, 4 * (SIZE + 2) + 2)  # 8 samples, 4 columns
    metrics = json.loads((mask_run / "metrics.json").read_text())
    for key in ("vessel_fraction", "real_vessel_fraction", "pairwise_iou", "real_pairwise_iou", "copy_iou_max",
                "copy_iou_mean", "real_copy_iou_max", "components", "real_components"):
        assert np.isfinite(metrics[f"val/{key}"]) and np.isfinite(metrics[f"init/{key}"]), key
    for key in ("train/g_loss_first", "train/g_loss_last", "train/d_loss_first", "train/d_loss_last",
                "time/fit_s", "time/total_s"):
        assert np.isfinite(metrics[key]), key
    assert metrics["train/iterations"] == ITERATIONS and metrics["train/steps"] == 2 * ITERATIONS
    # Anatomy at the native 96 px of the phantom, beside the real masks' own.
    for key in ("branch_points", "thin_fraction", "orientation_bias", "components"):
        assert np.isfinite(metrics[f"anatomy/{key}"]) and np.isfinite(metrics[f"anatomy_real/{key}"]), key
        assert np.isfinite(metrics[f"anatomy_vs_real/{key}"]), key
    assert metrics["anatomy_real/branch_points"] > 1
    for key in ("pairwise_iou", "twin_iou"):  # at native size
        assert 0 < metrics[f"anatomy/{key}"] < 1 and 0 < metrics[f"anatomy_real/{key}"] < 1, key


def test_mask_gan_learned_the_vessel_density(mask_run):
    """An untrained generator thresholds to ~50% vessels; after 100 iterations the samples' vessel
    fraction has closed most of the gap to the real masks', and D has not won outright."""
    m = json.loads((mask_run / "metrics.json").read_text())
    real = m["val/real_vessel_fraction"]
    assert 0.05 < real < 0.4
    assert abs(m["val/vessel_fraction"] - real) < 0.5 * abs(m["init/vessel_fraction"] - real)
    assert m["train/d_loss_last"] > 0.3  # nonsaturating D loss: 1.39 at chance, -> 0 when D wins


def test_generate_is_binary_in_the_fov_and_deterministic(model):
    out = model.generate(5, seed=3)
    assert set(out) == {"mask", "fov"}
    for key in ("mask", "fov"):
        assert out[key].shape == (5, 1, SIZE, SIZE) and out[key].dtype == torch.float32
        assert set(torch.unique(out[key]).tolist()) <= {0.0, 1.0}
    assert torch.all(out["mask"] <= out["fov"])  # no vessel outside the FOV
    assert 0.3 < out["fov"][0].mean() < 1.0 and torch.equal(out["fov"][0], out["fov"][4])  # the fixed FOV disc
    assert 0 < out["mask"].mean()
    again = model.generate(5, seed=3)
    assert torch.equal(out["mask"], again["mask"]) and torch.equal(out["fov"], again["fov"])
    assert not torch.equal(out["mask"], model.generate(5, seed=4)["mask"])


def test_native_masks_end_their_vessels_short_of_the_fov_edge_as_the_training_masks_do(mask_run, model):
    from synthmed_lightning.data.edge_fade import BAND, edge_depths

    checkpoint = load_checkpoint(mask_run / "checkpoints" / "last.ckpt", "mask")
    assert checkpoint["hyper_parameters"]["edge_fade"]["format"] == "synthmed-edge-fade/1"  # fitted by the stage
    faded = model.generate_native(8, 3, 96, 96)
    assert np.array_equal(faded["mask"], model.generate_native(8, 3, 96, 96)["mask"])  # the seed decides the depths
    fade, model.edge_fade = model.edge_fade, None
    try:
        plain = model.generate_native(8, 3, 96, 96)
    finally:
        model.edge_fade = fade
    fov = plain["fov"][0]
    distance = cv2.distanceTransform(np.pad(fov, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    beyond = distance > BAND * 96 / fade.fov_diameter  # the band scales with the FOV
    assert np.array_equal(faded["mask"][:, beyond], plain["mask"][:, beyond])
    assert not (faded["mask"] & ~plain["mask"].astype(bool)).any()  # it only clears
    depth = lambda masks: np.mean(np.concatenate([edge_depths(m, fov) for m in masks]))
    assert depth(faded["mask"]) > depth(plain["mask"])


def test_checkpoint_restores_the_final_ema_generator(mask_run, model):
    """The reloaded module draws exactly the samples the final validation measured."""
    metrics = json.loads((mask_run / "metrics.json").read_text())
    out = model.generate(NUM_SAMPLES, model.hparams.sample_seed)
    fov = out["fov"][0, 0].bool()
    fraction = np.mean([float(m[0][fov].mean()) for m in out["mask"]])
    assert fraction == pytest.approx(metrics["val/vessel_fraction"], abs=1e-6)
    assert model.hparams.source_size == [96, 96]
    with pytest.raises(CheckpointError, match="expected a stage=single checkpoint"):
        load_checkpoint(mask_run / "checkpoints" / "last.ckpt", "single")


def test_ddp_run_and_resume(tmp_path):
    """Two CPU processes (DDP with find_unused_parameters), then a resume with
    `ckpt_path=last` that continues from the DDP checkpoint to a larger budget."""
    out = tmp_path / "run"
    common = ("stage=mask", *SMOKE, f"hydra.run.dir={out}", "logger=none", "profile.mask.val_every=10")
    assert_ok(run_cli(*common, "trainer.devices=2", "profile.mask.iterations=10"))
    assert load_checkpoint(out / "checkpoints" / "last.ckpt", "mask")["global_step"] == 20
    assert json.loads((out / "metrics.json").read_text())["train/iterations"] == 10
    assert_ok(run_cli(*common, "ckpt_path=last", "profile.mask.iterations=15"))
    checkpoint = load_checkpoint(out / "checkpoints" / "last.ckpt", "mask")
    assert checkpoint["global_step"] == 30 and int(checkpoint["state_dict"]["iterations_done"]) == 15
    assert (out / "samples" / "step_000010.png").is_file() and (out / "samples" / "step_000015.png").is_file()


# ---------------------------------------------------------------- data


def test_datamodule_reads_training_masks_only_squared_and_augmented():
    dm = MaskDataModule(**PHANTOM, image_size=SIZE, batch_size=4, samples_per_epoch=8)
    dm.setup("fit")
    train = read_dataset({"name": "phantom", **PHANTOM["reader"]}, "train")
    assert dm.stems == [s.stem for s in train]  # the train split, never the test split
    assert dm.masks.shape == (6, SIZE, SIZE) and set(np.unique(dm.masks)) <= {0, 1}
    assert dm.fov.shape == (SIZE, SIZE) and 0.3 < dm.fov.mean() < 1.0
    assert dm.source_size == [96, 96]
    batch = next(iter(dm.train_dataloader()))
    assert batch["mask"].shape == (4, 1, SIZE, SIZE) and set(torch.unique(batch["mask"]).tolist()) <= {-1.0, 1.0}
    reference = next(iter(dm.val_dataloader()))
    assert reference["mask"].shape == (1, 6, 1, SIZE, SIZE)  # the whole reference set is one item


def test_soft_masks_train_on_coverage_and_samples_are_thresholded_at_the_data_threshold():
    dm = MaskDataModule(**PHANTOM, image_size=SIZE, batch_size=4, samples_per_epoch=8, mask_resize="area",
                        mask_threshold=0.25, soft_masks=True)
    dm.setup("fit")
    assert np.array_equal(dm.masks, (dm.coverage >= 0.25).astype(np.uint8))  # statistics use the binary masks
    batch = next(iter(dm.train_dataloader()))["mask"]
    assert len(torch.unique(batch)) > 2 and batch.min() >= -1 and batch.max() <= 1  # coverage, not {-1, 1}
    model = mask_gan(z_dim=8, image_size=SIZE, num_samples=2, sample_threshold=0.25)
    coverage = torch.tensor([0.1, 0.2, 0.3, 0.9]).view(1, 1, 2, 2)
    model.fov = torch.ones(1, 1, 2, 2)
    assert model.binary_mask(coverage * 2 - 1).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


def test_coverage_power_lifts_faint_coverage_for_the_gan_and_the_model_undoes_it():
    """coverage_power < 1: the GAN's items are coverage ** power (a capillary's faint coverage comes
    nearer the thick vessels'); statistics, the refiner's crops and the threshold stay on coverage."""
    settings = dict(**PHANTOM, image_size=SIZE, batch_size=4, samples_per_epoch=8, mask_resize="area",
                    mask_threshold=0.25, soft_masks=True, rotate=0, augmentation="none")
    plain, lifted = MaskDataModule(**settings), MaskDataModule(**settings, coverage_power=0.5)
    plain.setup("fit"), lifted.setup("fit")
    assert np.array_equal(lifted.masks, plain.masks) and np.array_equal(lifted.coarse_masks(), plain.coverage)
    assert np.allclose(lifted.gan_masks(), plain.coverage ** 0.5)
    faint = (plain.coverage > 0.05) & (plain.coverage < 0.25)
    assert faint.any() and np.all(lifted.gan_masks()[faint] > plain.coverage[faint] * 1.9)
    model = mask_gan(z_dim=8, image_size=SIZE, num_samples=2, sample_threshold=0.25, coverage_power=0.5)
    coverage = torch.tensor([0.1, 0.2, 0.3, 0.9]).view(1, 1, 2, 2)
    model.fov = torch.ones(1, 1, 2, 2)
    generated = coverage ** 0.5 * 2 - 1  # what a GAN that learned the lifted items draws
    assert torch.allclose(model.coverage(generated), coverage, atol=1e-6)
    assert model.binary_mask(generated).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="data.coverage_power=1.5"):
        MaskDataModule(**PHANTOM, coverage_power=1.5)
    with pytest.raises(ValueError, match="model.coverage_power=0"):  # e.g. from a checkpoint
        mask_gan(z_dim=8, image_size=SIZE, coverage_power=0.0)
    # the stage hands the data's power to the model it builds, only with soft masks
    for soft, expected in ((True, 0.5), (False, 1.0)):
        cfg = compose_config("stage=mask", *SMOKE, f"profile.mask.soft_masks={soft}", "profile.mask.coverage_power=0.5")
        stage = NoiseGANStage(MaskGAN)
        assert stage.model_arguments(cfg, stage.datamodule(cfg))["coverage_power"] == expected


def test_native_diversity_sees_a_generator_that_draws_few_layouts():
    """Eight samples that are two layouts drawn four times each (shifted by a pixel or two) against
    eight different real masks: each sample has a near twin, so twin_iou is far above the real masks'
    while the mean over all pairs (mostly pairs of different layouts) moves less."""
    rng = np.random.default_rng(0)
    real = np.zeros((8, 64, 64), bool)
    for mask in real:
        for _ in range(6):
            x0, y0, x1, y1 = map(int, rng.integers(0, 64, 4))
            cv2.line(mask.view(np.uint8), (x0, y0), (x1, y1), 1, 2)
    layouts = real[:2]
    samples = np.stack([np.roll(layouts[k % 2], int(rng.integers(-2, 3)), axis=1) for k in range(8)])
    out = native_diversity(samples, real)
    assert out["anatomy/twin_iou"] > 0.3 and out["anatomy_real/twin_iou"] < 0.15
    assert out["anatomy_vs_real/twin_iou"] > 2
    assert out["anatomy_vs_real/twin_iou"] > out["anatomy_vs_real/pairwise_iou"]


def test_max_vessel_width_fit_is_the_training_masks_width_quantile():
    """`fit` becomes the width 95 % of the training masks' centre line stays within (a number the
    model and its checkpoint keep); a number or null passes through; under privacy=dp it is off."""
    stage = NoiseGANStage(MaskGAN)

    def arguments(*overrides):
        cfg = compose_config("stage=mask", *SMOKE, *overrides)
        datamodule = stage.datamodule(cfg)
        return datamodule, stage.model_arguments(cfg, datamodule)

    datamodule, fitted = arguments("profile.mask.max_vessel_width=fit")
    masks, fovs = zip(*datamodule.native)
    expected = width_quantile(masks, WIDTH_QUANTILE, fovs)
    assert fitted["max_vessel_width"] == expected and 1 <= expected < width_quantile(masks, 1.0, fovs)
    assert arguments("profile.mask.max_vessel_width=5")[1]["max_vessel_width"] == 5
    assert arguments("profile.mask.max_vessel_width=null")[1]["max_vessel_width"] is None
    dp = compose_config("stage=mask", *SMOKE, "profile.mask.max_vessel_width=fit", "privacy=dp")
    assert max_vessel_width(dp, datamodule) is None
    with pytest.raises(ValueError, match="model.max_vessel_width=fit"):  # only the stage fits it
        mask_gan(z_dim=8, image_size=SIZE, max_vessel_width="fit")


def test_datamodule_with_images():
    dm = MaskDataModule(**PHANTOM, image_size=SIZE, batch_size=2, samples_per_epoch=2, with_images=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and batch["image"].min() >= -1 and batch["image"].max() <= 1


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="data.image_size=48"):
        MaskDataModule(**PHANTOM, image_size=48)
    with pytest.raises(ConfigError, match="data.mask_resize"):
        MaskDataModule(**PHANTOM, mask_resize="cubic")
    with pytest.raises(ConfigError, match="data.augmentation"):
        MaskDataModule(**PHANTOM, augmentation="strong")


def test_square_round_trip_and_thin_vessels():
    mask = np.zeros((60, 40), np.uint8)
    mask[10:50, 20] = 1  # a 1 px vertical vessel
    square = to_square(mask)
    assert square.shape == (60, 60) and square[10:50, 30].all()
    assert np.array_equal(from_square(square, 60, 40), mask)
    # Far below native size, area coverage keeps a thin vessel connected; linear sampling may drop it.
    diagonal = np.eye(96, dtype=np.uint8)
    area = square_resize_binary(diagonal, 32, "area", 0.25)
    assert np.all(area.any(axis=1)) and np.all(area.any(axis=0))


def test_fov_to_native_rounds_off_the_coarse_stair_steps():
    # A fundus FOV (a disc cut by the image's top and bottom) drawn at 32 px and mapped back to
    # 300 x 290: upsampled alone its rim keeps ~9 px steps; smoothed it stays close to the true disc.
    height, width = 300, 290
    yy, xx = np.mgrid[:height, :width]
    disc = ((yy - 150) ** 2 + (xx - 145) ** 2 <= 140**2).astype(np.uint8)
    coarse = square_resize_binary(disc, 32, "linear", 0.5)
    stepped, smooth = from_square(coarse, height, width), fov_to_native(coarse, height, width)
    rim = 2 * np.pi * 140
    def mean_rim_error(fov):  # px: pixels on the wrong side of the rim per pixel of rim
        return np.sum(fov != disc) / rim
    assert mean_rim_error(smooth) < 0.5 * mean_rim_error(stepped) and mean_rim_error(smooth) < 1.5
    assert smooth.dtype == np.uint8 and set(np.unique(smooth)) == {0, 1}
    assert abs(int(smooth.sum()) - int(disc.sum())) < 0.01 * disc.sum()


def test_ema_tracks_the_generator():
    model = mask_gan(z_dim=8, ema_decay=0.9)
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.generator_ema.parameters()]
    model.update_ema()  # first update: decay min(0.9, 1/10) = 0.1, so 90% of the way to the generator
    for old, ema, live in zip(before, model.generator_ema.parameters(), model.generator.parameters()):
        assert torch.allclose(ema, 0.1 * old + 0.9 * live, atol=1e-6)
        assert not ema.requires_grad
    assert int(model.iterations_done) == 1
    assert not any(p is q for p in model.generator_ema.parameters() for q in model.generator.parameters())


def test_spectral_norm_can_be_limited_to_the_discriminator():
    """The generator follows D's spectral_norm (conf/model/_dcgan.yaml) unless set itself (SN-GAN)."""
    from torch.nn.utils import parametrize

    from synthmed_lightning.stages.common import instantiate_primitive

    def normalised(net):
        return any(parametrize.is_parametrized(m) for m in net.modules())

    sn = ("stage=mask", "profile=smoke", "profile.mask.spectral_norm=true")
    both = instantiate_primitive(compose_config(*sn).model)
    d_only = instantiate_primitive(compose_config(*sn, "model.generator.spectral_norm=false").model)
    assert normalised(both.generator) and normalised(both.discriminator)
    assert not normalised(d_only.generator) and normalised(d_only.discriminator)
    assert not normalised(mask_gan(spectral_norm=False).discriminator)


def test_checkpoint_with_the_old_flat_network_settings_fails_in_one_line(mask_run):
    """Before the networks became `generator`/`discriminator` dicts a checkpoint kept their sizes as
    flat hyperparameters (z_dim, base_channels, ...): this version refuses it with one line."""
    checkpoint = load_checkpoint(mask_run / "checkpoints" / "last.ckpt", "mask")
    checkpoint["hyper_parameters"] = old_style_hparams(checkpoint["hyper_parameters"])
    with pytest.raises(CheckpointError, match="checkpoint settings do not fit this version's MaskGAN") as error:
        restore_module(MaskGAN, checkpoint)
    assert "\n" not in str(error.value)


def old_style_hparams(hparams: dict) -> dict:
    """The flat hyperparameters a checkpoint of the previous version held for the same networks."""
    hparams = dict(hparams)
    g, d = hparams.pop("generator"), hparams.pop("discriminator")
    return {**hparams, "z_dim": g["z_dim"], "image_size": g["image_size"], "base_channels": g["base_channels"],
            "d_base_channels": None, "upsample": g["upsample"], "spectral_norm": d["spectral_norm"],
            "generator_spectral_norm": None, "max_channels": g["max_channels"], "d_scales": d["scales"],
            "minibatch_std": d["minibatch_std"]}
