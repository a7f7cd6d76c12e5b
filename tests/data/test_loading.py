"""DataLoader settings chosen for the machine, and images decoded once per run, never per epoch."""

from types import SimpleNamespace

import cv2
import pytest

from synthmed_lightning.data import io, loading
from synthmed_lightning.data.datamodule import VesselDataModule
from synthmed_lightning.data.loading import loader_settings
from synthmed_lightning.data.mask_data import MaskDataModule
from synthmed_lightning.data.phantom import make_phantom_dataset
from synthmed_lightning.errors import ConfigError


def _trainer(accelerator: str, devices: int = 1):
    return SimpleNamespace(accelerator=type(accelerator, (), {})(), num_devices=devices)


def test_auto_settings_follow_the_accelerator_and_the_cores(monkeypatch):
    monkeypatch.setattr(loading, "usable_cores", lambda: 16)
    cpu = loader_settings("auto", "auto", _trainer("CPUAccelerator"))
    assert cpu == {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
    assert loader_settings("auto", "auto", None)["num_workers"] == 0  # a DataModule used without a Trainer
    gpu = loader_settings("auto", "auto", _trainer("CUDAAccelerator"))
    assert gpu == {"num_workers": 8, "pin_memory": True, "persistent_workers": True}
    assert loader_settings("auto", "auto", _trainer("CUDAAccelerator", devices=4))["num_workers"] == 3  # 16 cores / 4 ranks - 1
    monkeypatch.setattr(loading, "usable_cores", lambda: 2)
    assert loader_settings("auto", "auto", _trainer("CUDAAccelerator", devices=2))["num_workers"] == 0
    assert loader_settings("auto", "auto", _trainer("MPSAccelerator"))["pin_memory"] is False
    assert loader_settings(3, False, _trainer("CUDAAccelerator")) == {"num_workers": 3, "pin_memory": False,
                                                                      "persistent_workers": True}


@pytest.mark.parametrize("workers, pin", [(-1, "auto"), ("many", "auto"), (True, "auto"), (0, "yes")])
def test_bad_loader_settings_name_the_setting(workers, pin):
    with pytest.raises(ConfigError, match="data.num_workers" if pin == "auto" else "data.pin_memory"):
        loader_settings(workers, pin)


@pytest.fixture
def folder_dataset(tmp_path):
    """Six phantom images written as files (images/, masks/, fov/): 18 files to decode."""
    for p in make_phantom_dataset(6, seed=0, height=96, width=96):
        for sub, array in (("images", cv2.cvtColor(p.image, cv2.COLOR_RGB2BGR)), ("masks", p.mask * 255), ("fov", p.fov * 255)):
            (tmp_path / sub).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / sub / f"{p.stem}.png"), array)
    return tmp_path


@pytest.fixture
def decodes(monkeypatch):
    calls = []
    original = io._imread
    monkeypatch.setattr(io, "_imread", lambda path, flags: calls.append(path) or original(path, flags))
    return calls


def test_vessel_datamodule_decodes_each_file_once(folder_dataset, decodes):
    dm = VesselDataModule(name="folder", root=str(folder_dataset), patch_size=32, batch_size=4, patches_per_epoch=8,
                          val_count=2)
    dm.setup("fit")
    assert len(decodes) == 18
    for _ in range(2):  # two epochs of patches and of whole validation images
        for loader in (dm.train_dataloader(), dm.val_dataloader()):
            assert sum(1 for _ in loader) > 0
    assert len(decodes) == 18


def test_mask_datamodule_decodes_each_file_once(folder_dataset, decodes):
    dm = MaskDataModule(name="folder", root=str(folder_dataset), image_size=32, batch_size=2, samples_per_epoch=4,
                        with_images=True)
    dm.setup("fit")
    assert len(decodes) == 18
    for _ in range(2):
        assert sum(1 for _ in dm.train_dataloader()) == 2
    assert len(decodes) == 18
