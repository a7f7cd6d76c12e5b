"""The photographs' FOV edge, ring by ring inward from it, given to paintings.

Why: a fundus camera's field of view ends in a sharp step, a few px from bright to black, often
with a thin bright line. Stage II paints a soft dark fall-off over 15-40 px instead (DRIVE, green,
relative to the FOV 80-120 px further in: 0.76 four px in against the photographs' 1.03). A U-Net
trained on such paintings has never seen the real step, and on real photographs marks the FOV's
edge as vessel: 570-610 false-positive px per DRIVE test image within 15 px of the edge, against
60 for the U-Net trained on the photographs.

`FovRim.fit` keeps, per colour channel, the median over the photographs of each 1 px ring's mean
(ring k: distance to the outside of the FOV about k + 1 px) relative to the mean of the band just
inside the rings. Only these numbers are kept (plain JSON for a checkpoint). `apply` measures the
same rings on a painting and multiplies each by ``target / painted``, fading the correction out
over the innermost rings so that no step appears where it stops. The rings scale with the FOV's
diameter when painting at another size than the photographs'.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["RING_COUNT", "FovRim", "rim_profile"]

FORMAT = "synthmed-fov-rim/1"
RING_COUNT = 32   # 1 px rings (at the photographs' FOV diameter) corrected, from the FOV's edge inward
_BAND = 16        # px: the reference band just inside the rings
_FADE = 12        # innermost rings over which the correction fades to none
_GAIN = (0.25, 4.0)


def _edge_distance(fov: np.ndarray, scale: float) -> np.ndarray:
    """(H, W) float: each FOV pixel's distance to the outside, in photograph px (0 outside)."""
    return cv2.distanceTransform((fov > 0).astype(np.uint8), cv2.DIST_L2, 5) / scale


def _rings(distance: np.ndarray) -> np.ndarray:
    """(H, W) int: ring k for a distance in [k + 0.5, k + 1.5) (the FOV's outermost pixels, at
    distance 1, are ring 0; rounding keeps them there at a slightly other scale), RING_COUNT beyond
    the rings, -1 outside."""
    ring = np.clip(np.floor(distance - 0.5), 0, RING_COUNT).astype(np.int64)
    return np.where(distance > 0, ring, -1)


def _ratios(image: np.ndarray, distance: np.ndarray) -> np.ndarray | None:
    """(RING_COUNT, 3) each ring's mean colour / the reference band's; NaN for an empty ring.
    None when the band is black (an empty painting) or the FOV too small for the rings and band to
    be its rim: its radius under twice their width (at smaller sizes the rings would be the FOV)."""
    if distance.max() < 2 * (RING_COUNT + _BAND):
        return None
    band = (distance >= RING_COUNT + 0.5) & (distance < RING_COUNT + 0.5 + _BAND)
    reference = image[band].mean(axis=0)
    if (reference < 1.0).any():
        return None
    ring = _rings(distance)
    return np.stack([image[ring == k].mean(axis=0) / reference if (ring == k).any() else np.full(3, np.nan)
                     for k in range(RING_COUNT)])


def rim_profile(image: np.ndarray, fov: np.ndarray, scale: float = 1.0) -> np.ndarray | None:
    """(RING_COUNT, 3) ring means relative to the band inside them, of one RGB (H, W, 3) image
    with its (H, W) FOV (`scale`: px per photograph px), or None for a FOV too small or black."""
    return _ratios(image.astype(np.float64), _edge_distance(fov, scale))


@dataclass
class FovRim:
    """The photographs' median FOV-edge profile per channel; see the module."""

    profile: np.ndarray     # (RING_COUNT, 3) ring mean / band mean
    fov_diameter: float     # px: the photographs' mean FOV diameter (rings scale with it)

    @classmethod
    def fit(cls, images: Iterable[np.ndarray], fovs: Iterable[np.ndarray], fov_diameters: Iterable[float]) -> FovRim:
        """Fit to real RGB photographs (H, W, 3) with their FOVs and FOV diameters."""
        images, fovs, diameters = list(images), list(fovs), list(fov_diameters)
        if not images or not len(images) == len(fovs) == len(diameters):
            raise ValueError(f"fit needs one FOV and diameter per image (got {len(images)} images, {len(fovs)} FOVs, "
                             f"{len(diameters)} diameters)")
        mean_diameter = float(np.mean(diameters))
        measured = [rim_profile(i, f, d / mean_diameter) for i, f, d in zip(images, fovs, diameters)]
        measured = [m for m in measured if m is not None]
        if not measured:
            raise ValueError("fit: no photograph has a FOV large enough to measure its rim")
        profile = np.nanmedian(np.stack(measured), axis=0)
        return cls(np.nan_to_num(profile, nan=1.0), mean_diameter)

    @classmethod
    def fit_samples(cls, samples: Iterable) -> FovRim:
        """`fit` on `Sample`s (image, fov, fov_diameter), as the readers return them."""
        samples = list(samples)
        return cls.fit([s.image for s in samples], [s.fov for s in samples], [s.fov_diameter for s in samples])

    def apply(self, image: np.ndarray, fov: np.ndarray, fov_diameter: float | None = None) -> np.ndarray:
        """The RGB uint8 image (H, W, 3) with its rim moved to the photographs'; pixels further in
        than the rings, and outside the FOV, are unchanged. Deterministic."""
        out = image.astype(np.float64)
        distance = _edge_distance(fov, (fov_diameter or self.fov_diameter) / self.fov_diameter)
        painted = _ratios(out, distance)
        if painted is None:
            return image.copy()
        gain = np.clip(self.profile / np.maximum(np.nan_to_num(painted, nan=1.0), 1e-3), *_GAIN)
        fade = np.clip((RING_COUNT - np.arange(RING_COUNT)) / _FADE, 0.0, 1.0)[:, None]
        lookup = np.ones((RING_COUNT + 1, 3))  # the last row: beyond the rings
        lookup[:RING_COUNT] = np.exp(fade * np.log(gain))
        ring = _rings(distance)
        out = np.where((ring >= 0)[..., None], out * lookup[np.maximum(ring, 0)], out)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    # ---- persistence -----------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON: a list of per-ring [R, G, B] ratios."""
        return {"format": FORMAT, "rings": RING_COUNT, "profile": self.profile.tolist(),
                "fov_diameter": self.fov_diameter}

    @classmethod
    def from_dict(cls, values: dict) -> FovRim:
        """Rebuild from `to_dict`'s output. Data from elsewhere: another format or ring count, a
        missing, malformed, non-finite or non-positive value is refused with a ValueError."""
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            raise ValueError(f"not a FOV rim profile (expected format {FORMAT!r})")
        if values.get("rings") != RING_COUNT:
            raise ValueError(f"FOV rim profile with {values.get('rings')} rings; this version uses {RING_COUNT}")
        try:
            profile = np.asarray(values["profile"], np.float64)
            diameter = float(values["fov_diameter"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"FOV rim profile: missing or malformed value ({error})") from None
        if profile.shape != (RING_COUNT, 3) or not np.isfinite(profile).all() or (profile < 0).any() \
                or not np.isfinite(diameter) or diameter <= 0:
            raise ValueError("FOV rim profile: one finite non-negative [R, G, B] per ring and a positive fov_diameter")
        return cls(profile, diameter)
