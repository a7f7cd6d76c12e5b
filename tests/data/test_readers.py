"""Readers against the real DRIVE files and against small CHASE/folder datasets written here."""

import cv2
import numpy as np
import pytest

from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.errors import ConfigError, DataError


def test_drive_train_and_test_splits(drive_root):
    train = read_dataset({"name": "drive", "root": str(drive_root)}, "train")
    test = read_dataset({"name": "drive", "root": str(drive_root)}, "test")
    assert [s.stem for s in train] == [f"{i}_training" for i in range(21, 41)]
    assert [s.stem for s in test] == [f"{i:02d}_test" for i in range(1, 21)]
    for s in train[:3] + test[:3]:
        assert s.image.shape == (584, 565, 3) and s.image.dtype == np.uint8
        assert set(np.unique(s.mask)) == {0, 1} and set(np.unique(s.fov)) == {0, 1}
        assert 520 <= s.fov_diameter <= 550
    fraction = np.mean([s.mask[s.fov > 0].mean() for s in train])
    assert 0.10 < fraction < 0.15  # DRIVE vessels cover ~12.5% of the FOV


def test_drive_second_observer_differs_from_first(drive_root):
    first = read_dataset({"name": "drive", "root": str(drive_root)}, "test")
    second = read_dataset({"name": "drive", "root": str(drive_root), "annotator": 2}, "test")
    agreement = np.mean([(a.mask == b.mask).mean() for a, b in zip(first, second)])
    assert 0.9 < agreement < 1.0


def test_drive_mislaid_root_names_the_layout(drive_root):
    with pytest.raises(DataError, match="DRIVE layout"):
        read_dataset({"name": "drive", "root": str(drive_root / "training")}, "train")


def _fundus(h=60, w=64, seed=0):
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), np.uint8)
    cv2.circle(image, (w // 2, h // 2), min(h, w) // 2 - 2, (40, 90, 200), -1)  # BGR on disk
    image = np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cv2.line(mask, (10, h // 2), (w - 10, h // 2), 255, 3)
    return image, mask


def test_chase_reader_derives_the_fov(tmp_path):
    for i in range(1, 15):
        for eye in "LR":
            image, mask = _fundus(seed=i)
            cv2.imwrite(str(tmp_path / f"Image_{i:02d}{eye}.jpg"), image)
            cv2.imwrite(str(tmp_path / f"Image_{i:02d}{eye}_1stHO.png"), mask)
    train = read_dataset({"name": "chase", "root": str(tmp_path)}, "train")
    test = read_dataset({"name": "chase", "root": str(tmp_path)}, "test")
    assert len(train) == 20 and len(test) == 8
    assert test[0].stem == "Image_11L"
    s = train[0]
    assert s.image.shape == (60, 64, 3) and s.mask.sum() > 0
    assert s.fov[30, 32] == 1 and s.fov[0, 0] == 0  # the bright disc, not the black corners


def _write_folder(root, n=3, h=40, w=48, with_fov=False):
    for d in ("images", "masks", "fov"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, mask = _fundus(h, w, seed=i)
        cv2.imwrite(str(root / "images" / f"case{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"case{i}.png"), mask)
        if with_fov:
            cv2.imwrite(str(root / "fov" / f"case{i}.png"), np.full((h, w), 255, np.uint8))


def test_folder_reader_matches_masks_by_stem(tmp_path):
    _write_folder(tmp_path, with_fov=True)
    samples = read_dataset({"name": "folder", "root": str(tmp_path)}, "train")
    assert [s.stem for s in samples] == ["case0", "case1", "case2"]
    assert samples[0].fov.all() and samples[0].mask.sum() > 0
    # Without split folders every split is the whole folder.
    assert len(read_dataset({"name": "folder", "root": str(tmp_path)}, "test")) == 3


def test_folder_reader_uses_split_folders(tmp_path):
    _write_folder(tmp_path / "train", n=2)
    _write_folder(tmp_path / "test", n=1)
    assert len(read_dataset({"name": "folder", "root": str(tmp_path)}, "train")) == 2
    assert len(read_dataset({"name": "folder", "root": str(tmp_path)}, "test")) == 1


def test_missing_mask_is_named(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "masks" / "case1.png").unlink()
    with pytest.raises(DataError, match="no mask for .*case1.png"):
        read_dataset({"name": "folder", "root": str(tmp_path)}, "train")


def test_mask_size_mismatch_is_named(tmp_path):
    _write_folder(tmp_path)
    cv2.imwrite(str(tmp_path / "masks" / "case2.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match=r"case2.png is 10x10 but its image .* is 48x40"):
        read_dataset({"name": "folder", "root": str(tmp_path)}, "train")


def test_truncated_image_is_named(tmp_path):
    _write_folder(tmp_path)
    path = tmp_path / "images" / "case0.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match="case0.png"):
        read_dataset({"name": "folder", "root": str(tmp_path)}, "train")


def test_truncated_jpeg_is_detected(tmp_path):
    _write_folder(tmp_path)
    image, _ = _fundus(40, 48)
    path = tmp_path / "images" / "case0.png"
    path.unlink()
    jpg = tmp_path / "images" / "case0.jpg"
    cv2.imwrite(str(jpg), image)
    jpg.write_bytes(jpg.read_bytes()[:-200])
    with pytest.raises(DataError, match="truncated"):
        read_dataset({"name": "folder", "root": str(tmp_path)}, "train")


def test_non_binary_mask_is_rejected(tmp_path):
    _write_folder(tmp_path)
    ramp = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (40, 1))
    cv2.imwrite(str(tmp_path / "masks" / "case0.png"), ramp)
    with pytest.raises(DataError, match="not binary"):
        read_dataset({"name": "folder", "root": str(tmp_path)}, "train")


def test_greyscale_images_are_accepted_as_rgb(tmp_path):
    _write_folder(tmp_path)
    cv2.imwrite(str(tmp_path / "images" / "case0.png"), np.full((40, 48), 120, np.uint8))
    sample = read_dataset({"name": "folder", "root": str(tmp_path)}, "train")[0]
    assert sample.image.shape == (40, 48, 3)


def test_unknown_dataset_and_missing_root():
    with pytest.raises(ConfigError, match="unknown dataset name 'drvie'"):
        read_dataset({"name": "drvie", "root": "x"}, "train")
    with pytest.raises(DataError, match="folder not found"):
        read_dataset({"name": "drive", "root": "/nonexistent/DRIVE"}, "train")
    with pytest.raises(ConfigError, match="data.root is not set"):
        read_dataset({"name": "folder", "root": None}, "train")


def test_phantom_splits_are_disjoint():
    spec = {"name": "phantom", "count": 3, "height": 64, "width": 64}
    train, test = read_dataset(spec, "train"), read_dataset(spec, "test")
    assert len(train) == len(test) == 3
    assert not any(np.array_equal(a.image, b.image) for a in train for b in test)
