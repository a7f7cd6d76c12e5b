"""Huge and unreadable image files are refused in one line naming the file, before decoding
(data/io.py `check_pixel_count`, `check_readable`; data/readers.py `read_folder`)."""

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from synthmed_lightning.data.io import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, read_binary, read_rgb
from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.errors import ConfigError, DataError


def png_claiming(width: int, height: int) -> bytes:
    """A few-byte PNG whose header claims width x height RGB pixels (its pixel data is cut short)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _folder(root: Path, image: bytes | None = None, mask: bytes | None = None, name: str = "a.png") -> Path:
    """root/images/<name> + root/masks/<name>: a valid 32x32 pair unless bytes are given."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    png = cv2.imencode(".png", np.full((32, 32, 3), 120, np.uint8))[1]
    mask_png = cv2.imencode(".png", np.zeros((32, 32), np.uint8))[1]
    (root / "images" / name).write_bytes(png.tobytes() if image is None else image)
    (root / "masks" / name).write_bytes(mask_png.tobytes() if mask is None else mask)
    return root


@pytest.mark.parametrize(("width", "height"), [(30000, 30000), (60000, 60000)])
def test_a_huge_image_is_refused_before_decoding(tmp_path, monkeypatch, width, height):
    # 30000x30000 took 5.6 GB before the size-mismatch error; 60000x60000 was an OpenCV traceback.
    root = _folder(tmp_path, image=png_claiming(width, height))
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded a file above the pixel limit"))
    with pytest.raises(DataError) as error:
        read_dataset({"name": "folder", "root": str(root)}, "train")
    message = str(error.value)
    assert f"image {root / 'images' / 'a.png'} is {width}x{height}" in message and "\n" not in message
    assert f"above the limit of {DEFAULT_MAX_PIXELS:,}" in message and MAX_PIXELS_ENV in message


def test_a_huge_mask_is_refused_too(tmp_path):
    root = _folder(tmp_path, mask=png_claiming(30000, 30000))
    with pytest.raises(DataError, match=r"masks/a\.png is 30000x30000"):
        read_dataset({"name": "folder", "root": str(root)}, "train")


def test_the_pixel_limit_is_a_setting(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), np.zeros((20, 30, 3), np.uint8))
    monkeypatch.setenv(MAX_PIXELS_ENV, "599")
    with pytest.raises(DataError, match="30x20 .*above the limit of 599"):
        read_rgb(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "600")
    assert read_rgb(path).shape == (20, 30, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match=f"{MAX_PIXELS_ENV}=lots: expected a positive number of pixels"):
        read_rgb(path)


def test_a_symlink_loop_is_an_unreadable_file_not_a_missing_mask(tmp_path):
    root = _folder(tmp_path)
    os.symlink("b.png", root / "images" / "b.png")  # images/b.png -> images/b.png, and no masks/b.png
    with pytest.raises(DataError) as error:
        read_dataset({"name": "folder", "root": str(root)}, "train")
    assert str(error.value) == f"unreadable file {root / 'images' / 'b.png'}: a symbolic link loop"


def test_a_looping_or_dangling_mask_link_is_named(tmp_path):
    root = _folder(tmp_path)
    mask = root / "masks" / "a.png"
    mask.unlink()
    os.symlink("a.png", mask)
    with pytest.raises(DataError, match=f"unreadable file {mask}: a symbolic link loop"):
        read_dataset({"name": "folder", "root": str(root)}, "train")
    mask.unlink()
    os.symlink("gone.png", mask)
    with pytest.raises(DataError, match=f"unreadable file {mask}: a symbolic link to gone.png, which does not exist"):
        read_binary(mask)
    with pytest.raises(DataError, match=f"file not found: {root / 'nothing.png'}"):
        read_binary(root / "nothing.png")
    with pytest.raises(DataError, match=f"unreadable file {root / 'images'}: not a regular file"):
        read_rgb(root / "images")
