"""stage=image (Stage II, pix2pix) end to end through the CLI on the phantom, and `ImageGAN.paint`."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from helpers import compose_config, smoke_run
from synthmed_lightning.checkpoints import load_checkpoint, restore_module
from synthmed_lightning.models.image_gan import ImageGAN


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    return smoke_run(tmp_path_factory, "image")


def test_image_run_writes_checkpoint_grid_and_metrics(image_run):
    assert (image_run / ".hydra" / "config.yaml").is_file()
    checkpoint = load_checkpoint(image_run / "checkpoints" / "last.ckpt", "image")
    assert checkpoint["global_step"] == 2 * 40  # 40 generator iterations, one D + one G step each
    for name in ("latest.png", "step_000020.png", "step_000040.png"):
        assert (image_run / "samples" / name).is_file(), name
    grid = cv2.imread(str(image_run / "samples" / "latest.png"))
    assert grid.shape[0] > 2 * 96 and grid.shape[1] > 3 * 96  # 2 validation rows of mask | generated | real at 96 px
    metrics = json.loads((image_run / "metrics.json").read_text())
    assert metrics["train/iterations"] == 40 and metrics["train/steps"] == 80
    assert 0.0 < metrics["val/l1"] < 2.0
    assert metrics["train/l1_last"] < metrics["train/l1_first"]  # it learned


def test_paint_shape_fov_and_determinism(image_run):
    model = restore_module(ImageGAN, load_checkpoint(image_run / "checkpoints" / "last.ckpt", "image"))
    model.train()
    generator = torch.Generator().manual_seed(0)
    mask = (torch.rand(3, 1, 50, 37, generator=generator) > 0.8).float()  # not a multiple of 2**num_downs
    fov = torch.zeros(3, 1, 50, 37)
    fov[..., 5:45, 4:33] = 1
    mask *= fov
    painted = model.paint(mask, fov)
    assert painted.shape == (3, 3, 50, 37)
    assert painted.min() >= -1 and painted.max() <= 1
    assert torch.all(painted[fov.expand_as(painted) == 0] == -1)  # black outside the FOV
    assert painted[fov.expand_as(painted) == 1].std() > 0
    assert torch.equal(painted, model.paint(mask, fov))  # deterministic
    assert torch.allclose(painted[1:2], model.paint(mask[1:2], fov[1:2]), atol=1e-5)  # independent of the batch
    assert model.training  # mode restored


def test_paint_rejects_bad_shapes():
    model = ImageGAN(generator={"_target_": "synthmed_lightning.models.components.pix2pix.UNetGenerator",
                                "base_channels": 4, "num_downs": 2},
                     discriminator={"_target_": "synthmed_lightning.models.components.pix2pix.PatchGANDiscriminator",
                                    "base_channels": 4})
    with pytest.raises(ValueError, match="paint expects"):
        model.paint(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8))
    assert model.paint(torch.zeros(2, 1, 9, 11), torch.ones(2, 1, 9, 11)).shape == (2, 3, 9, 11)


def test_image_stage_config_and_checks():
    from synthmed_lightning.errors import ConfigError
    from synthmed_lightning.stages.image import check_image_config

    cfg = compose_config("stage=image", "profile=smoke")
    assert cfg.model._target_.endswith("ImageGAN") and cfg.trainer.max_steps == 80  # 2 x 40 iterations
    assert cfg.data.patch_size == 32 and cfg.model.generator.num_downs == 3
    check_image_config(cfg)
    with pytest.raises(ConfigError, match="data.preprocess.mode=green"):
        check_image_config(compose_config("stage=image", "profile=smoke", "data.preprocess.mode=green"))
    with pytest.raises(ConfigError, match="multiple of 2"):
        check_image_config(compose_config("stage=image", "profile=smoke", "profile.image.patch_size=36"))
    for profile, patch in (("quick", 256), ("paper", 512)):
        cfg = compose_config("stage=image", f"profile={profile}")
        assert cfg.data.patch_size == patch and patch // 2 ** cfg.model.generator.num_downs == 4
        check_image_config(cfg)


def test_grid_shows_real_masks(image_run):
    """The grid's first column is the validation images' real masks: binary, some vessels."""
    grid = cv2.imread(str(image_run / "samples" / "latest.png"), cv2.IMREAD_GRAYSCALE)
    tile = grid[2: 2 + 96, 2: 2 + 96]
    assert set(np.unique(tile)) <= {0, 255} and (tile == 255).mean() > 0.02


def test_stage2_paints_the_real_training_masks_in_colour_and_photo(image_run, tmp_path):
    """`mask_source=real`: the export holds the dataset's own training masks, each painted by Stage II
    with its own colour draw; sample i paints mask i mod N. With `appearance=photo` the same masks get
    the photographs' texture, noise, fall-off and blur (statistics kept in the Stage II checkpoint):
    their band energies lie closer to the photographs' than the colour-only paintings'."""
    from helpers import SMOKE, assert_ok, run_cli
    from synthmed_lightning.data.nuisance import NuisanceModel, band_energies
    from synthmed_lightning.data.readers import dataset_spec, read_dataset
    from synthmed_lightning.export import read_manifest

    checkpoint = load_checkpoint(image_run / "checkpoints" / "last.ckpt", "image")
    nuisance = NuisanceModel.from_dict(checkpoint["hyper_parameters"]["nuisance"])
    exports = {}
    for appearance in ("colour", "photo"):
        out = tmp_path / appearance
        assert_ok(run_cli("stage=generate", *SMOKE, f"image_ckpt={image_run / 'checkpoints' / 'last.ckpt'}",
                          "mask_source=real", "num_samples=8", f"appearance={appearance}", f"out_dir={out}",
                          f"hydra.run.dir={tmp_path / ('run_' + appearance)}"))
        assert read_manifest(out)["mode"] == "stage2_real_masks"
        exports[appearance] = read_dataset({"name": "folder", "root": str(out)}, "train")
    data = compose_config("stage=generate", "profile=smoke").data
    real = read_dataset(dataset_spec(data.name, data.get("root"), dict(data.reader)), "train")
    assert len(real) < 8
    for i, (colour, photo) in enumerate(zip(exports["colour"], exports["photo"])):
        source = real[i % len(real)]
        assert np.array_equal(colour.mask > 0, (source.mask > 0) & (source.fov > 0))
        assert np.array_equal(colour.mask, photo.mask) and np.array_equal(colour.fov, photo.fov)
        assert colour.image[colour.fov > 0].std() > 5  # painted, not blank
        assert not np.array_equal(colour.image, photo.image) and (photo.image[photo.fov == 0] == 0).all()
    colour = exports["colour"]
    assert not np.array_equal(colour[0].image, colour[len(real)].image)  # same mask, another colour draw

    def distance(samples):
        return np.mean([np.abs(np.log(band_energies(s.image, s.fov, s.mask) / nuisance.band_energy)).mean()
                        for s in samples])
    assert distance(exports["photo"]) < distance(exports["colour"])


def test_vessel_profile_gives_the_paintings_the_photographs_vessel_contrast(image_run, tmp_path):
    """stage=image keeps the photographs' vessel contrast ring by ring; `vessel_profile=true` moves the
    paintings' rings towards it (the same masks), and the manifest records the choice. How close it
    brings a painted vessel is tested on hand-made images (tests/data/test_vessel_profile.py)."""
    from helpers import SMOKE, assert_ok, run_cli
    from synthmed_lightning.data.readers import read_dataset
    from synthmed_lightning.data.vessel_profile import VesselProfile, contrast_profile
    from synthmed_lightning.export import read_manifest

    checkpoint = image_run / "checkpoints" / "last.ckpt"
    model = VesselProfile.from_dict(load_checkpoint(checkpoint, "image")["hyper_parameters"]["vessel_profile"])
    assert model.profile[3] > 0.05 > abs(model.profile[-1])  # a vessel's outer pixel is dark, 2 px outside is not
    exports = {}
    for choice in ("false", "true"):
        out = tmp_path / choice
        assert_ok(run_cli("stage=generate", *SMOKE, f"image_ckpt={checkpoint}", "mask_source=real", "num_samples=6",
                          f"vessel_profile={choice}", f"out_dir={out}", f"hydra.run.dir={tmp_path / ('run_' + choice)}"))
        assert read_manifest(out)["config"]["vessel_profile"] is (choice == "true")
        exports[choice] = read_dataset({"name": "folder", "root": str(out)}, "train")
    assert all(np.array_equal(plain.mask, profiled.mask) for plain, profiled in zip(exports["false"], exports["true"]))
    # The smoke painter draws few vessels (contrast about 0: nothing to scale), so only some images change.
    assert any(not np.array_equal(plain.image, profiled.image) for plain, profiled in zip(exports["false"], exports["true"]))

    def distance(samples):
        darkened = model.profile > 0.005  # rings the photographs darken (the smoke phantom has no 4 px core)
        profiles = np.stack([contrast_profile(s.image, s.mask, s.fov)[darkened] for s in samples])
        return np.abs(np.nanmean(profiles, axis=0) - model.profile[darkened]).mean()
    assert distance(exports["true"]) < distance(exports["false"])


def test_fov_rim_and_optic_disc_give_the_paintings_the_photographs_edge_and_disc(image_run, tmp_path, drive_root):
    """stage=image keeps both fits (None, with a warning, for a FOV too small: the smoke phantom's).
    With fits from DRIVE's photographs put in, `fov_rim=true optic_disc=true`
    repaint the same masks with a rim closer to the photographs' and a disc, and the manifest
    records the choice. Their geometry is tested on hand-made images (tests/data/)."""
    from helpers import SMOKE, assert_ok, run_cli
    from synthmed_lightning.data.fov_rim import FovRim, rim_profile
    from synthmed_lightning.data.optic_disc import OpticDisc
    from synthmed_lightning.data.readers import read_dataset
    from synthmed_lightning.export import read_manifest

    checkpoint = load_checkpoint(image_run / "checkpoints" / "last.ckpt", "image")
    hparams = checkpoint["hyper_parameters"]
    # stage=image fits both; the phantom's 88 px FOV is too small for either (it warns and keeps None)
    assert "fov_rim" in hparams and hparams["fov_rim"] is None
    assert "optic_disc" in hparams and hparams["optic_disc"] is None
    photographs = read_dataset({"name": "drive", "root": str(drive_root)}, "train")[:4]
    rim = FovRim.fit_samples(photographs)
    checkpoint["hyper_parameters"].update(fov_rim=rim.to_dict(), optic_disc=OpticDisc.fit_samples(photographs).to_dict())
    fitted = tmp_path / "fitted.ckpt"
    torch.save(checkpoint, fitted)
    exports = {}
    for choice in ("false", "true"):
        out = tmp_path / choice
        assert_ok(run_cli("stage=generate", *SMOKE, f"image_ckpt={fitted}", "mask_source=real", "num_samples=4",
                          f"fov_rim={choice}", f"optic_disc={choice}", f"out_dir={out}",
                          f"hydra.run.dir={tmp_path / ('run_' + choice)}"))
        config = read_manifest(out)["config"]
        assert config["fov_rim"] is config["optic_disc"] is (choice == "true")
        exports[choice] = read_dataset({"name": "folder", "root": str(out)}, "train")
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(exports["false"], exports["true"]))

    def rim_distance(samples):
        profiles = [rim_profile(s.image, s.fov, s.fov_diameter / rim.fov_diameter) for s in samples]
        return np.nanmean(np.abs(np.stack(profiles)[:, 1:6] - rim.profile[1:6]))  # the outer rings, at this scale
    assert rim_distance(exports["true"]) < rim_distance(exports["false"])
