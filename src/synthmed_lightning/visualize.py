"""Pictures people look at: prediction overlays, sample tiles and grids, PNG writing."""

from pathlib import Path

import cv2
import numpy as np
import torch

TP_COLOUR, FP_COLOUR, FN_COLOUR = (0, 220, 0), (255, 40, 40), (40, 120, 255)
# Grey level outside the FOV in mask tiles: tells "not retina" from background (0) and vessels (255).
OUTSIDE_FOV_GREY = 48


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) uint8, or (H, W) for one channel: clamped, then rounded
    half to even. The one converter of model outputs to pixels (grids, exports)."""
    array = ((torch.as_tensor(image).detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    return np.ascontiguousarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))


def mask_tile(mask: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """uint8 (S, S): vessels (> 0.5) white, background black, outside the FOV dark grey."""
    tile = np.where(fov, 0, OUTSIDE_FOV_GREY).astype(np.uint8)
    tile[(mask > 0.5) & fov] = 255
    return tile


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB (H, W, 3) or greyscale (H, W) uint8 image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), out):
        raise OSError(f"cannot write {path}")


def overlay_prediction(rgb: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None,
                       fov: np.ndarray | None = None) -> np.ndarray:
    """The image, dimmed, with true positives green, false positives red and misses blue.

    Without a ground-truth mask, predicted vessels are drawn green.
    """
    out = (rgb.astype(np.float32) * 0.5).astype(np.uint8)
    pred = pred.astype(bool)
    if fov is not None:
        pred &= fov.astype(bool)
    if mask is None:
        out[pred] = TP_COLOUR
        return out
    mask = mask.astype(bool)
    out[pred & mask] = TP_COLOUR
    out[pred & ~mask] = FP_COLOUR
    out[~pred & mask] = FN_COLOUR
    return out


def overlay_legend(height: int = 24) -> np.ndarray:
    """A white RGB strip (height, W, 3) naming `overlay_prediction`'s colours, to go under its pictures."""
    entries = (("true positive", TP_COLOUR), ("false positive", FP_COLOUR), ("missed vessel", FN_COLOUR))
    font, scale, box = cv2.FONT_HERSHEY_SIMPLEX, 0.45, height - 10
    widths = [box + 6 + cv2.getTextSize(label, font, scale, 1)[0][0] + 14 for label, _ in entries]
    strip = np.full((height, 6 + sum(widths), 3), 255, np.uint8)
    x = 6
    for (label, colour), width in zip(entries, widths):
        cv2.rectangle(strip, (x, 5), (x + box, 5 + box), colour, thickness=-1)
        cv2.putText(strip, label, (x + box + 6, height - 7), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        x += width
    return strip


def image_grid(images: list[np.ndarray], columns: int = 4, pad: int = 2) -> np.ndarray:
    """Tile equally sized uint8 images (greyscale or RGB) into one RGB grid."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    tiles = [np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im for im in images]
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        y, x = pad + (i // columns) * (h + pad), pad + (i % columns) * (w + pad)
        grid[y: y + h, x: x + w] = tile
    return grid
