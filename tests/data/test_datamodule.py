"""The shared DataModule: patches, splits, preprocessing and FOV-scale resampling."""

import numpy as np
import pytest
import torch

from synthmed_lightning.data.datamodule import VesselDataModule
from synthmed_lightning.data.transforms import preprocess
from synthmed_lightning.errors import ConfigError

PHANTOM = {"count": 6, "height": 96, "width": 96}


def _datamodule(**kwargs):
    settings = dict(name="phantom", reader=PHANTOM, patch_size=32, batch_size=4, patches_per_epoch=8, val_count=2)
    return VesselDataModule(**{**settings, **kwargs})


def test_patches_have_the_configured_shape_and_range():
    dm = _datamodule()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32)
    assert batch["mask"].shape == batch["fov"].shape == (4, 1, 32, 32)
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert set(torch.unique(batch["mask"]).tolist()) <= {0.0, 1.0}
    assert batch["fov"][:, :, 16, 16].all()  # patches are centred inside the FOV


def test_validation_split_is_seeded_and_disjoint():
    a, b = _datamodule(split_seed=1), _datamodule(split_seed=1)
    for dm in (a, b):
        dm.setup("fit")
    assert [s.stem for s in a.val_samples] == [s.stem for s in b.val_samples]
    assert {s.stem for s in a.val_samples}.isdisjoint(s.stem for s in a.train_samples)
    assert len(a.train_samples) == 4
    others = []
    for seed in (2, 3, 4):
        dm = _datamodule(split_seed=seed)
        dm.setup("fit")
        others.append([s.stem for s in dm.val_samples])
    assert any(stems != [s.stem for s in a.val_samples] for stems in others)  # the seed matters


def test_val_count_must_leave_training_images():
    with pytest.raises(ConfigError, match="val_count=6"):
        _datamodule(val_count=6).setup("fit")


def test_fov_diameter_resamples_training_images():
    dm = _datamodule(fov_diameter=44)
    dm.setup("fit")
    assert dm.train_fov_diameter == 44
    assert all(abs(s.fov_diameter - 44) <= 2 for s in dm.train_samples)
    native = _datamodule()
    assert native.train_fov_diameter == pytest.approx(np.median([s.fov_diameter for s in native.train_samples]))


def test_green_and_clahe_preprocessing():
    dm = _datamodule(preprocess={"mode": "green", "clahe": True})
    dm.setup("fit")
    assert dm.in_channels == 1
    assert next(iter(dm.train_dataloader()))["image"].shape[1] == 1
    image = (np.random.default_rng(0).random((32, 32, 3)) * 80).astype(np.uint8)
    assert preprocess(image, "green").shape == (32, 32, 1)
    assert preprocess(image, "rgb", clahe=True).std() > image.std()  # local contrast stretched


def test_test_split_can_come_from_another_dataset():
    dm = _datamodule(test={"name": "phantom", "reader": {"count": 2, "height": 64, "width": 64, "seed": 9}})
    dm.setup("test")
    assert len(dm.test_samples) == 2 and dm.test_samples[0].image.shape == (64, 64, 3)
    item = next(iter(dm.test_dataloader()))
    assert item["image"].shape == (1, 3, 64, 64) and item["rgb"].shape == (1, 64, 64, 3)


def test_extra_train_datasets_join_the_training_images_only():
    extra = {"name": "phantom", "reader": {"count": 3, "height": 96, "width": 96, "seed": 5}}
    dm = _datamodule(extra_train=[extra], extra_train_share=0.25)
    dm.setup("fit")
    assert len(dm.train_samples) == 6 - 2 + 3 and len(dm.val_samples) == 2
    alone = _datamodule()
    alone.setup("fit")
    assert [s.stem for s in dm.val_samples] == [s.stem for s in alone.val_samples]
    assert dm.train_weights[0] * 4 == pytest.approx(0.75) and dm.train_weights[-1] * 3 == pytest.approx(0.25)
    dataset = dm.train_dataloader().dataset
    drawn = np.random.default_rng(0).choice(7, size=4000, p=dataset.weights)
    assert 0.22 < np.mean(drawn >= 4) < 0.28  # a quarter of the patches from the 3 extra images
