"""Stage I's mask refiner: native-resolution vessels drawn on the DCGAN's coarse layout.

The DCGAN draws a vessel mask at `image_size` (64 px in the quick profile, 128 px before); mapped back to a
584 x 565 DRIVE image by plain upsampling every vessel is 4-5 px wide, capillaries are missing and
edges are blocky. The refiner is a small U-Net that reads the coarse mask upsampled bilinearly to
native size (the geometry of `data.mask_data.from_square`) and returns native vessel logits. It is
trained on the real training masks through the degradation the DCGAN's data goes through
(`MaskDataModule`'s square-resize and threshold, then the same upsampling), with BCE + Dice on
native crops; `MaskGAN` holds it (docs/stage1.md).

A coarse mask fragments thin vessels (a capillary's coverage of a coarse pixel falls below the
threshold here and there), and a generator trained on such masks draws fragments of its own. What a
per-pixel loss leaves of them is joined after thresholding: `join_fragments` links each fragment to
the nearest other vessel within a gap of a few coarse pixels by a 1-px line (the connection the
coarse grid lost), and `remove_fragments` drops specks smaller than about one coarse pixel.
"""

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthmed_lightning.metrics.mask_stats import skeleton
from synthmed_lightning.models.components.unet import UNet


#: Logit the refiner starts from at a pixel the upsampled coarse mask calls vessel (its negative at
#: background): the U-Net learns a correction to the plain upsampling, so an untrained refiner draws
#: what `from_square` draws, and a short run (the smoke profile) cannot turn samples into noise.
COARSE_LOGIT = 4.0


class MaskRefiner(nn.Module):
    """Coarse vessel mask, upsampled to native size, (B, 1, H, W) in [0, 1] -> native vessel logits
    (B, 1, H, W): COARSE_LOGIT x (2 x input - 1) plus a U-Net's correction. Any H and W: the input is
    padded with background to a multiple of 2**depth."""

    def __init__(self, base_channels: int = 8, depth: int = 3):
        super().__init__()
        self.net = UNet(in_channels=1, out_channels=1, base_channels=base_channels, depth=depth)

    @property
    def size_multiple(self) -> int:
        return self.net.size_multiple

    def forward(self, coarse: torch.Tensor) -> torch.Tensor:
        height, width = coarse.shape[-2:]
        m = self.size_multiple
        signed = F.pad(coarse, (0, (-width) % m, 0, (-height) % m)) * 2 - 1  # padded with background
        return (COARSE_LOGIT * signed + self.net(signed))[..., :height, :width]


def refiner_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice of native vessel logits against a {0, 1} target, both (B, 1, H, W). BCE alone
    favours the background (~88 % of a fundus mask) and loses the thinnest vessels; Dice weighs
    vessel pixels alone."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    return bce + dice_loss(torch.sigmoid(logits), target)


def dice_loss(probability: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per sample, averaged; `smooth` keeps crops without vessels defined."""
    dims = tuple(range(1, probability.ndim))
    overlap = (probability * target).sum(dims)
    return (1 - (2 * overlap + smooth) / (probability.sum(dims) + target.sum(dims) + smooth)).mean()


def join_fragments(mask: np.ndarray, max_gap: float, passes: int = 4) -> np.ndarray:
    """Bool (H, W): `mask` with each 8-connected component joined to the nearest vessel pixel of
    another component by a 1-px line when that pixel lies within `max_gap` px. Repeated `passes`
    times (joined groups join further), stopping early when nothing is left to join."""
    mask = np.asarray(mask, bool).astype(np.uint8)
    reach = int(np.ceil(max_gap)) + 1
    height, width = mask.shape
    for _ in range(passes):
        count, labels, boxes, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        lines = []
        for label in range(1, count):
            x, y, w, h = boxes[label, :4]
            top, left = max(0, y - reach), max(0, x - reach)
            window = labels[top:min(height, y + h + reach), left:min(width, x + w + reach)]
            line = _nearest_link(window == label, (window > 0) & (window != label), max_gap)
            if line is not None:
                (y0, x0), (y1, x1) = line
                lines.append(((left + x0, top + y0), (left + x1, top + y1)))
        if not lines:
            break
        for start, end in lines:
            cv2.line(mask, start, end, 1, 1)
    return mask.astype(bool)


def _nearest_link(own: np.ndarray, others: np.ndarray, max_gap: float):
    """((y, x) in `own`, (y, x) in `others`) of the closest pair, or None when none lies within `max_gap`."""
    if not others.any():
        return None
    distance = cv2.distanceTransform((~others).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    distance = np.where(own, distance, np.inf)
    start = np.unravel_index(int(np.argmin(distance)), distance.shape)
    if distance[start] > max_gap:
        return None
    ys, xs = np.nonzero(others)
    nearest = int(np.argmin((ys - start[0]) ** 2 + (xs - start[1]) ** 2))
    return (int(start[0]), int(start[1])), (int(ys[nearest]), int(xs[nearest]))


def remove_fragments(mask: np.ndarray, min_area: float) -> np.ndarray:
    """Bool (H, W): `mask` without the 8-connected components of fewer than `min_area` pixels."""
    mask = np.asarray(mask, bool)
    if min_area <= 0:
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False  # the background
    return keep[labels]


def cap_width(mask: np.ndarray, max_width: float) -> np.ndarray:
    """Bool (H, W): `mask` with every vessel wider than `max_width` px narrowed to it. The mask is rebuilt
    from its centre line, each centre pixel's disc clamped to radius (max_width - 1) // 2, and
    intersected with the mask: vessels at most that wide stay as they are, nothing is added, and the
    centre line (so connectivity) is kept."""
    mask = np.asarray(mask, bool)
    cap = max(1, int((max_width - 1) // 2))
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    if distance.max() <= cap:
        return mask
    centre = skeleton(mask)
    radius = np.minimum(np.ceil(distance), cap).astype(int)
    kept = np.zeros(mask.shape, np.uint8)
    for r in range(1, cap + 1):
        seeds = (centre & (radius == r)).astype(np.uint8)
        if seeds.any():
            kept |= cv2.dilate(seeds, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return mask & (kept > 0)
