"""Malformed image files through the `data=folder` reader (data/readers.py, data/io.py): truncated
PNG/TIFF/GIF/JPEG/BMP, headers claiming huge sizes, random bytes, empty files. Each is refused
with a UserError whose message is one line naming the file; one CLI run checks the contract end
to end (exit 2, one `error:` line, no traceback, nothing written outside the run folder).
Seeded, so a failure reproduces."""

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import SMOKE, assert_one_line_error, run_cli
from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.errors import UserError

SEED = 20240611
_SIZE = (48, 40)  # (height, width) of the valid pairs the malformed files are cut from


def _valid(suffix: str, rng: np.random.Generator) -> bytes:
    image = rng.integers(0, 256, (*_SIZE, 3), dtype=np.uint8)
    if suffix == ".gif":  # OpenCV writes no GIF
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="GIF")
        return buffer.getvalue()
    return cv2.imencode(suffix, image)[1].tobytes()


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _gif_claiming(width: int, height: int) -> bytes:
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def _tiff_claiming(width: int, height: int) -> bytes:
    """Little-endian TIFF: one 8-bit grey strip of 16 bytes, the IFD claiming width x height."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
            (273, 4, 8), (277, 3, 1), (278, 4, height), (279, 4, 16)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", tag, kind, 1, value) for tag, kind, value in tags)
    return b"II*\x00" + struct.pack("<I", 24) + b"\0" * 16 + ifd + b"\0\0\0\0"


def malformed_cases() -> list[tuple[str, str, bytes]]:
    """(case id, file suffix, bytes): every one must be refused."""
    rng = np.random.default_rng(SEED)
    cases = []
    for suffix in (".png", ".tif", ".gif", ".jpg", ".bmp"):
        data = _valid(suffix, rng)
        for cut in sorted({8, *rng.integers(9, len(data) - 1, 3).tolist()}):
            cases.append((f"truncated{suffix}@{cut}", suffix, data[:cut]))
        cases.append((f"random{suffix}", suffix, rng.bytes(int(rng.integers(1, 4096)))))
        cases.append((f"empty{suffix}", suffix, b""))
    for signature, suffix in ((b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF89a", ".gif"), (b"II*\x00", ".tif")):
        cases.append((f"signature+random{suffix}", suffix, signature + rng.bytes(256)))
    cases += [("huge.png", ".png", _png_claiming(60000, 60000)), ("huge.gif", ".gif", _gif_claiming(65535, 65535)),
              ("huge.tif", ".tif", _tiff_claiming(60000, 60000))]
    return cases


def _bit_flipped_cases() -> list[tuple[str, str, bytes]]:
    """Valid files with a few flipped bits: they may still decode, but never with a traceback."""
    rng = np.random.default_rng(SEED + 1)
    cases = []
    for suffix in (".png", ".tif", ".gif", ".jpg"):
        data = bytearray(_valid(suffix, rng))
        for position in rng.integers(0, len(data), 4):
            data[position] ^= 1 << int(rng.integers(0, 8))
        cases.append((f"flipped{suffix}", suffix, bytes(data)))
    return cases


def _dataset(root: Path, role: str, suffix: str, data: bytes) -> Path:
    """root/images/x<suffix> + root/masks/x.png, the file in `role` replaced by `data`."""
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
    image_path = root / "images" / (f"x{suffix}" if role == "image" else "x.png")
    mask_path = root / "masks" / (f"x{suffix}" if role == "mask" else "x.png")
    image_path.write_bytes(data if role == "image" else cv2.imencode(".png", np.full((*_SIZE, 3), 90, np.uint8))[1].tobytes())
    mask_path.write_bytes(data if role == "mask" else cv2.imencode(".png", np.zeros(_SIZE, np.uint8))[1].tobytes())
    return image_path if role == "image" else mask_path


@pytest.mark.parametrize("role", ["image", "mask"])
def test_malformed_files_are_refused_in_one_line_naming_them(tmp_path, role):
    for case, suffix, data in malformed_cases():
        root = tmp_path / f"{role}-{case}"
        path = _dataset(root, role, suffix, data)
        with pytest.raises(UserError) as error:
            read_dataset({"name": "folder", "root": str(root)}, "train")
        message = str(error.value)
        assert "\n" not in message and str(path) in message, f"{case}: {message}"


def test_bit_flipped_files_decode_or_are_refused_never_crash(tmp_path):
    for case, suffix, data in _bit_flipped_cases():
        root = tmp_path / case
        path = _dataset(root, "image", suffix, data)
        try:
            read_dataset({"name": "folder", "root": str(root)}, "train")
        except UserError as error:
            assert "\n" not in str(error) and str(path) in str(error), f"{case}: {error}"


def _snapshot(folder: Path, skip: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and skip not in p.parents}


def test_a_huge_header_on_the_command_line_is_one_line_and_writes_nothing_outside_the_run(tmp_path):
    root = tmp_path / "data"
    path = _dataset(root, "image", ".png", _png_claiming(60000, 60000))  # an OpenCV traceback before
    run = tmp_path / "run"
    before = _snapshot(tmp_path, run)
    result = run_cli("stage=segment", *SMOKE, "data=folder", f"data.root={root}", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, str(path), "60000x60000")
    assert _snapshot(tmp_path, run) == before  # the data untouched, nothing new beside the run folder
