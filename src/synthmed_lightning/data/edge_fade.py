"""Stage I's vessels end short of the FOV's edge, as the annotators' do.

Why: on a fundus photograph the vessels grow dark and blurred towards the FOV's edge, and the
manual masks stop them 1-5 px before it (DRIVE training masks: vessel share of the outermost 1.5 px
ring 0.018, against 0.098 ten px further in). Stage I's masks carry their vessels right to the
edge, where they pile up (0.037 in the outermost ring, 0.084 in the next): a U-Net trained on
paintings of them learns that dark lines meeting the rim are vessels, and on real photographs marks
the rim's shading as vessel (484 false-positive px per DRIVE test image within 15 px of the edge,
against 38 when the painter paints the real masks). Clearing every vessel within 6 px of the edge
removed those false alarms but also the vessels the real test masks do have there (sensitivity
0.785 -> 0.764).

So `EdgeFade.fit` reads, on the real masks, how close each vessel piece that enters the band
within `BAND` px of the edge comes to it (the smallest distance of its pixels to the outside of the
FOV), and keeps the quantiles of those depths. `apply` draws one depth per vessel piece in a
mask's band from that distribution and clears the piece's pixels closer to the edge than it: each
vessel ends where an annotator's might have, and the vessel share per ring comes out at the real
masks'. Distances scale with the FOV's diameter when masks are drawn at another size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from synthmed_lightning.data.sample import fov_diameter

__all__ = ["BAND", "EdgeFade", "edge_depths"]

FORMAT = "synthmed-edge-fade/1"
BAND = 9.0          # px (at the fit's FOV diameter): the band along the edge whose vessel pieces are read
_QUANTILES = 33     # quantiles of the depths kept (0, 1/32, ..., 1)


def _edge_distance(fov: np.ndarray) -> np.ndarray:
    """(H, W) float: each FOV pixel's distance to the outside (the outermost pixels 1; 0 outside)."""
    return cv2.distanceTransform(np.pad(fov > 0, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]


def _band_pieces(mask: np.ndarray, distance: np.ndarray, band: float) -> tuple[int, np.ndarray]:
    """(count + 1, labels) of the 8-connected vessel pieces within `band` px of the FOV's edge."""
    inside = (np.asarray(mask) > 0) & (distance > 0) & (distance <= band)
    return cv2.connectedComponents(inside.astype(np.uint8), connectivity=8)


def edge_depths(mask: np.ndarray, fov: np.ndarray, band: float = BAND) -> np.ndarray:
    """(pieces,) how close each vessel piece within `band` px of the FOV's edge comes to it, in px."""
    distance = _edge_distance(fov)
    count, labels = _band_pieces(mask, distance, band)
    if count <= 1:
        return np.zeros(0)
    closest = np.full(count, np.inf)
    np.minimum.at(closest, labels.ravel(), distance.ravel())
    return closest[1:]


@dataclass
class EdgeFade:
    """Quantiles of the real masks' vessel depths at the FOV's edge; see the module."""

    depths: np.ndarray      # (_QUANTILES,) px, non-decreasing
    fov_diameter: float     # px: the real masks' mean FOV diameter (depths scale with it)

    @classmethod
    def fit(cls, masks: Iterable[np.ndarray], fovs: Iterable[np.ndarray]) -> EdgeFade:
        """Fit to real (H, W) vessel masks with their FOVs (any sizes: depths are taken at each FOV's
        diameter relative to the mean). ValueError when no vessel comes within `BAND` px of an edge."""
        masks, fovs = list(masks), list(fovs)
        if not masks or len(masks) != len(fovs):
            raise ValueError(f"fit needs one FOV per mask (got {len(masks)} masks, {len(fovs)} FOVs)")
        diameters = [fov_diameter(np.asarray(f)) for f in fovs]
        mean_diameter = float(np.mean(diameters))
        depths = np.concatenate([edge_depths(m, f, BAND * d / mean_diameter) * mean_diameter / d
                                 for m, f, d in zip(masks, fovs, diameters)])
        if depths.size == 0:
            raise ValueError(f"fit: no vessel comes within {BAND:g} px of the FOV's edge")
        return cls(np.quantile(depths, np.linspace(0.0, 1.0, _QUANTILES)), mean_diameter)

    def apply(self, mask: np.ndarray, fov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`mask` (H, W, 0/1 or bool) with each vessel piece near the FOV's edge cleared closer to the edge
        than a depth drawn from the real masks'; the rest of the mask unchanged. Same dtype as `mask`.
        Draws one number from `rng` per piece."""
        scale = fov_diameter(np.asarray(fov)) / self.fov_diameter
        distance = _edge_distance(fov)
        count, labels = _band_pieces(mask, distance, BAND * scale)
        if count <= 1:
            return mask.copy()
        stop = np.zeros(count)
        stop[1:] = np.interp(rng.random(count - 1), np.linspace(0.0, 1.0, _QUANTILES), self.depths) * scale
        out = mask.copy()
        out[(labels > 0) & (distance < stop[labels])] = 0
        return out

    # ---- persistence -----------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON for a checkpoint's hyperparameters."""
        return {"format": FORMAT, "depths": self.depths.tolist(), "fov_diameter": self.fov_diameter}

    @classmethod
    def from_dict(cls, values: dict) -> EdgeFade:
        """Rebuild from `to_dict`'s output. Data from elsewhere: another format, a missing, malformed or
        non-finite value, depths out of order or beyond the band, are refused with a ValueError."""
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            raise ValueError(f"not an edge fade (expected format {FORMAT!r})")
        try:
            depths = np.asarray(values["depths"], np.float64)
            diameter = float(values["fov_diameter"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"edge fade: missing or malformed value ({error})") from None
        if depths.shape != (_QUANTILES,) or not np.isfinite(depths).all() or (np.diff(depths) < 0).any() \
                or depths[0] < 0 or depths[-1] > BAND or not np.isfinite(diameter) or diameter <= 0:
            raise ValueError(f"edge fade: {_QUANTILES} non-decreasing depths within 0-{BAND:g} px and a positive "
                             "fov_diameter")
        return cls(depths, diameter)
