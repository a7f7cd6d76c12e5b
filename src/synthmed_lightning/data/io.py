"""Reading images and binary masks from disk, with one-line errors that name the file.

Before decoding, a file must be a readable regular file (a symbolic link loop or a dangling link
is named as such, not as a missing file) and its header must claim at most `max_pixels()`
pixels: a few-KB PNG can claim 60000x60000 and cost gigabytes to decode.
"""

import errno
import os
import stat
import warnings
from pathlib import Path

import cv2
import numpy as np

from synthmed_lightning.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".ppm")

# A mask may carry a little interpolation/JPEG noise; more than this share of grey pixels is not a mask.
_MAX_GREY_FRACTION = 0.01

# Largest image decoded, in pixels: 100 MP is 5x a 20 MP fundus camera's frame, and costs
# 300 MB as RGB (decoding and conversions take a few times that). The environment variable
# raises it for one run, for every reader (drive, chase, folder, exports) alike.
MAX_PIXELS_ENV = "SYNTHMED_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000


def max_pixels() -> int:
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV}={value}: expected a positive number of pixels (default {DEFAULT_MAX_PIXELS})")
    return limit


def check_readable(path: Path) -> None:
    """A regular file that can be opened, or one line saying why not (missing, a link loop...)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode  # follows links: a loop raises ELOOP, a dangling link ENOENT
    except OSError as error:
        if error.errno == errno.ENOENT and not path.is_symlink():
            raise DataError(f"file not found: {path}") from None
        if error.errno == errno.ENOENT:
            raise DataError(f"unreadable file {path}: a symbolic link to {os.readlink(path)}, which does not exist") from None
        reason = "a symbolic link loop" if error.errno == errno.ELOOP else error.strerror
        raise DataError(f"unreadable file {path}: {reason}") from None
    if not stat.S_ISREG(mode):
        raise DataError(f"unreadable file {path}: not a regular file")


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, without decoding its pixels; None if Pillow cannot
    parse the header (decoding then decides)."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # Pillow's own bomb check would raise before we can name the limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": decoding below has the last word
            with Image.open(path) as image:
                return tuple(image.size)
    except Exception:  # any header Pillow cannot parse: OpenCV decodes, or refuses in one line
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def check_pixel_count(path: Path) -> None:
    size = header_size(path)
    limit = max_pixels()
    if size is not None and size[0] * size[1] > limit:
        raise DataError(f"image {path} is {size[0]}x{size[1]} ({size[0] * size[1]:,} pixels), above the limit of "
                        f"{limit:,}: not decoded (set {MAX_PIXELS_ENV}=<pixels> to allow larger images)")


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB. Greyscale files are accepted and repeated over three channels."""
    image = _imread(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_binary(path: Path, what: str = "mask") -> np.ndarray:
    """(H, W) uint8 in {0, 1}; a file with many grey levels is rejected as not binary."""
    grey = _imread(path, cv2.IMREAD_GRAYSCALE)
    low, high = int(grey.min()), int(grey.max())
    if low == high:  # an all-background (or all-foreground) mask
        return np.full_like(grey, int(high > 0))
    # Two levels, whatever they are (DRIVE's 2nd observer uses 3 and 253), plus a little noise.
    in_between = (grey > low) & (grey < high)
    if in_between.mean() > _MAX_GREY_FRACTION:
        raise DataError(f"{what} {path} is not binary: {in_between.mean():.1%} of its pixels are neither {low} nor {high}")
    return (grey > (low + high) // 2).astype(np.uint8)


def check_same_size(image: np.ndarray, other: np.ndarray, image_path: Path, other_path: Path, what: str) -> None:
    if image.shape[:2] != other.shape[:2]:
        (h, w), (oh, ow) = image.shape[:2], other.shape[:2]
        raise DataError(f"{what} {other_path} is {ow}x{oh} but its image {image_path} is {w}x{h}")


def derive_fov(image: np.ndarray, threshold: int = 20) -> np.ndarray:
    """FOV of a fundus photo with no FOV file: the largest bright region, holes filled."""
    grey = image.max(axis=2)
    bright = (grey > threshold).astype(np.uint8)
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright)
    if count <= 1:
        return np.ones(grey.shape, np.uint8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(region)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def _imread(path: Path, flags: int) -> np.ndarray:
    path = Path(path)
    check_readable(path)
    check_pixel_count(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:  # e.g. permission denied
        raise DataError(f"unreadable file {path}: {error.strerror or error}") from None
    if path.suffix.lower() in (".jpg", ".jpeg") and bytes(data[-2:]) != b"\xff\xd9":
        # OpenCV decodes a cut JPEG into a half-grey image with only a warning.
        raise DataError(f"cannot decode {path}: the JPEG file is truncated")
    try:
        image = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as error:  # e.g. OpenCV's own pixel limit, for a header Pillow could not read
        # "OpenCV(5.1.0) <source>.cpp:80: error: (-215:Assertion failed) pixels <= ... in function '...'"
        reason = str(error).strip().splitlines()[0].partition("error: ")[2] or "OpenCV error"
        raise DataError(f"cannot decode {path}: {reason}") from None
    if image is None or image.size == 0:
        raise DataError(f"cannot decode {path}: the file is unreadable, truncated or not an image")
    return image
