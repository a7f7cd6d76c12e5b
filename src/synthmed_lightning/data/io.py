"""Reading images and binary masks from disk, with one-line errors that name the file."""

from pathlib import Path

import cv2
import numpy as np

from synthmed_lightning.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".ppm")

# A mask may carry a little interpolation/JPEG noise; more than this share of grey pixels is not a mask.
_MAX_GREY_FRACTION = 0.01


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
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    if path.suffix.lower() in (".jpg", ".jpeg") and bytes(data[-2:]) != b"\xff\xd9":
        # OpenCV decodes a cut JPEG into a half-grey image with only a warning.
        raise DataError(f"cannot decode {path}: the JPEG file is truncated")
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None or image.size == 0:
        raise DataError(f"cannot decode {path}: the file is unreadable, truncated or not an image")
    return image
