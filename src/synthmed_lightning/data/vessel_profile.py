"""How dark real photographs' vessels are, ring by ring from the mask's edge, given to paintings.

Why: Stage II paints vessels that are darker and wider than their masks (DRIVE, quick profile,
green channel, after `appearance=photo`: contrast 0.06 on the first pixel outside a vessel against
the photographs' 0.015, thick vessels 0.16-0.23 against 0.158). A U-Net trained on such pairs
learns that the dark fringe of a vessel is background, so on real photographs it draws vessels too
narrow and misses the faint ones: specificity above the real-trained U-Net's, sensitivity 0.60-0.73
against 0.81. The painters whose vessels were closest to the photographs' trained the best U-Nets.

A pixel's contrast is ``1 - pixel / local background`` (green channel; the background is the mean
of the nearby non-vessel FOV pixels, `local_background`). Its ring is its signed distance to the
mask's edge, rounded: -1 is a vessel's outer pixel, -4 four or more px inside, +1 the first pixel
outside. `VesselProfile.fit` keeps, over the photographs:

* `profile`: the mean over images of each ring's median contrast, from -4 to +2;
* how each photograph's thick-vessel contrast, relative to the mean, follows its green brightness
  (darker photographs have more contrasted vessels): a line, and the spread around it.

Only these numbers are kept, never an image (plain JSON for a checkpoint). `apply` measures a
painting's own rings and multiplies each ring's departure from the local background (all three
channels) by ``target / painted``, the target being the photographs' profile times a scale drawn
for the image (from the line at its brightness, plus the spread). Rings whose contrast is about 0 in
either are left alone, so the background is untouched; the mask never changes. The rings scale with
the FOV's diameter when painting at another size than the photographs'.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["RINGS", "VesselProfile", "contrast_profile", "local_background", "thin_vessels"]

FORMAT = "synthmed-vessel-profile/1"
#: Signed distance to the mask's edge (px) of each ring: negative inside a vessel.
RINGS = (-4, -3, -2, -1, 1, 2)
_SIGMA = 6.0        # px: the local background's Gaussian
_RIM = 4            # px of the FOV's rim left out: the dark outside is not background
_FLAT = 0.005       # contrast below which a ring is taken as undrawn / background
_GAIN = (0.25, 2.0)  # the most a ring is faded or deepened
_Z_CLIP = 2.0       # the drawn scale stays within +-2 spreads of the line
_SEED_STREAM = 0x7E55E1  # keeps this model's draws apart from the colour's for the same seed


def thin_vessels(mask: np.ndarray) -> np.ndarray:
    """The vessel pixels of a binary mask that a 3 x 3 opening removes: vessels at most 2 px wide."""
    mask = (mask > 0).astype(np.uint8)
    return (mask > 0) & (cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) == 0)


def local_background(channels: np.ndarray, mask: np.ndarray, fov: np.ndarray,
                     sigma: float = _SIGMA) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(background, measured, weight) of an (H, W) channel or (H, W, C) image: the Gaussian mean of
    the nearby non-vessel pixels inside the FOV (normalised by the weight averaged), where it can be
    measured (FOV less its rim, enough background nearby, not black; per channel, shaped like
    `channels`), and the background pixels' (H, W) weight."""
    vessel = mask > 0
    inside = cv2.erode((fov > 0).astype(np.uint8), np.ones((2 * _RIM + 1, 2 * _RIM + 1), np.uint8)) > 0
    near_vessel = cv2.dilate(vessel.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    weight = (inside & ~near_vessel).astype(np.float64)
    nearby_weight = cv2.GaussianBlur(weight, (0, 0), sigma)
    per_pixel = (lambda a: a) if channels.ndim == 2 else (lambda a: a[..., None])  # broadcast over channels
    background = cv2.GaussianBlur(channels.astype(np.float64) * per_pixel(weight), (0, 0), sigma) \
        / per_pixel(np.maximum(nearby_weight, 1e-6))
    measured = per_pixel(inside & (nearby_weight > 0.05)) & (background > 1.0)
    return background, measured, weight


def _rings(mask: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(H, W) int: each pixel's ring, its signed distance to the mask's edge / scale, rounded and
    clipped to RINGS' range (0 never occurs: inside is <= -1, outside >= +1)."""
    vessel = (mask > 0).astype(np.uint8)
    inside = cv2.distanceTransform(vessel, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - vessel, cv2.DIST_L2, 3)
    signed = np.where(vessel > 0, -np.maximum(np.rint(inside / scale), 1), np.maximum(np.rint(outside / scale), 1))
    return np.clip(signed, RINGS[0], RINGS[-1] + 1).astype(np.int64)  # RINGS[-1] + 1: beyond every ring


def _green_contrast(green: np.ndarray, background: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """``1 - pixel / background`` where the background is measured (elsewhere 1 - pixel)."""
    return 1.0 - green / np.where(measured, background, 1.0)


def _ring_medians(contrast: np.ndarray, measured: np.ndarray, rings: np.ndarray) -> np.ndarray:
    """(len(RINGS),) median contrast of each ring's measured pixels; NaN for a ring with none."""
    return np.array([np.median(contrast[(rings == r) & measured]) if ((rings == r) & measured).any() else np.nan
                     for r in RINGS])


def contrast_profile(image: np.ndarray, mask: np.ndarray, fov: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(len(RINGS),) median green contrast of each ring of one (H, W, 3) RGB image with its (H, W)
    vessel mask and FOV; NaN for a ring with no measured pixel. `scale`: ring width in px."""
    background, measured, _ = local_background(image[..., 1], mask, fov)
    return _ring_medians(_green_contrast(image[..., 1], background, measured), measured, _rings(mask, scale))


def _profile_and_thick(image: np.ndarray, mask: np.ndarray, fov: np.ndarray) -> tuple[np.ndarray, float]:
    """`contrast_profile` and the median contrast of the vessels wider than 2 px (as
    `metrics.vessel_contrast` measures it) of one photograph, from one background."""
    background, measured, _ = local_background(image[..., 1], mask, fov)
    contrast = _green_contrast(image[..., 1], background, measured)
    thick = (mask > 0) & ~thin_vessels(mask) & measured
    return (_ring_medians(contrast, measured, _rings(mask)),
            float(np.median(contrast[thick])) if thick.any() else float("nan"))


def _green_mean(image: np.ndarray, fov: np.ndarray) -> float:
    return float(image[..., 1][fov > 0].mean())


@dataclass
class VesselProfile:
    """The photographs' ring profile and how their vessel contrast follows brightness; see the module."""

    profile: np.ndarray       # (len(RINGS),) mean contrast per ring
    slope: float              # relative thick contrast per grey level of green brightness
    intercept: float
    spread: float             # std of the relative contrast around the line
    fov_diameter: float       # px: the photographs' mean FOV diameter (rings scale with it)

    @classmethod
    def fit(cls, images: Iterable[np.ndarray], masks: Iterable[np.ndarray], fovs: Iterable[np.ndarray],
            fov_diameters: Iterable[float]) -> VesselProfile:
        """Fit to real RGB photographs (H, W, 3) with their vessel masks, FOVs and FOV diameters."""
        images, masks, fovs, diameters = list(images), list(masks), list(fovs), list(fov_diameters)
        if not images or not len(images) == len(masks) == len(fovs) == len(diameters):
            raise ValueError(f"fit needs one mask, FOV and diameter per image (got {len(images)} images, "
                             f"{len(masks)} masks, {len(fovs)} FOVs, {len(diameters)} diameters)")
        measured = [_profile_and_thick(i, m, f) for i, m, f in zip(images, masks, fovs)]
        profiles = np.stack([profile for profile, _ in measured])
        thick = np.array([value for _, value in measured])
        green = np.array([_green_mean(i, f) for i, f in zip(images, fovs)])
        keep = np.isfinite(thick) & (thick > 0)
        slope, intercept, spread = 0.0, 1.0, 0.0  # too few photographs with thick vessels: one scale for all
        if keep.sum() > 2:
            relative, green = thick[keep] / thick[keep].mean(), green[keep]
            slope, intercept = np.polyfit(green, relative, 1)
            spread = float(np.std(relative - (slope * green + intercept)))
        finite = np.isfinite(profiles)  # a ring no photograph has gets 0: left alone
        profile = np.where(finite, profiles, 0.0).sum(axis=0) / np.maximum(finite.sum(axis=0), 1)
        return cls(profile, float(slope), float(intercept), spread, float(np.mean(diameters)))

    @classmethod
    def fit_samples(cls, samples: Iterable) -> VesselProfile:
        """`fit` on `Sample`s (image, mask, fov, fov_diameter), as the readers return them."""
        samples = list(samples)
        return cls.fit([s.image for s in samples], [s.mask for s in samples], [s.fov for s in samples],
                       [s.fov_diameter for s in samples])

    def scale(self, image: np.ndarray, fov: np.ndarray, seed: int) -> float:
        """The contrast scale this seed draws for an image of this brightness (1 = the mean photograph)."""
        z = float(np.clip(np.random.default_rng([seed, _SEED_STREAM]).standard_normal(), -_Z_CLIP, _Z_CLIP))
        return max(self.slope * _green_mean(image, fov) + self.intercept + self.spread * z, 0.0)

    def apply(self, image: np.ndarray, mask: np.ndarray, fov: np.ndarray, seed: int,
              fov_diameter: float | None = None) -> np.ndarray:
        """The RGB uint8 image (H, W, 3) with each ring's contrast moved to the drawn target; outside
        the measured FOV and beyond the rings it is unchanged. The same seed gives the same bytes."""
        scale = (fov_diameter or self.fov_diameter) / self.fov_diameter
        out = image.astype(np.float64)
        background, measured, _ = local_background(out, mask, fov)
        rings = _rings(mask, scale)
        green_measured = measured[..., 1]
        painted = _ring_medians(_green_contrast(out[..., 1], background[..., 1], green_measured), green_measured, rings)
        target = self.profile * self.scale(image, fov, seed)
        drawn = (painted > _FLAT) & (self.profile > _FLAT)
        gain = np.where(drawn, target / np.where(drawn, painted, 1.0), 1.0)
        lookup = np.ones(RINGS[-1] - RINGS[0] + 2)  # by ring - RINGS[0]; ring 0 never occurs, the last is beyond
        lookup[np.array(RINGS) - RINGS[0]] = np.clip(np.nan_to_num(gain, nan=1.0), *_GAIN)
        ring_gain = lookup[rings - RINGS[0]][..., None]
        out = np.where(measured, background + ring_gain * (out - background), out)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    # ---- persistence -----------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON: floats and a list of floats."""
        return {"format": FORMAT, "rings": list(RINGS), "profile": [float(v) for v in self.profile],
                "slope": self.slope, "intercept": self.intercept, "spread": self.spread,
                "fov_diameter": self.fov_diameter}

    @classmethod
    def from_dict(cls, values: dict) -> VesselProfile:
        """Rebuild from `to_dict`'s output. Data from elsewhere: another format or ring layout, a
        missing, malformed or non-finite value is refused with a ValueError."""
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            raise ValueError(f"not a vessel profile (expected format {FORMAT!r})")
        if list(values.get("rings", [])) != list(RINGS):
            raise ValueError(f"vessel profile with rings {values.get('rings')}; this version uses {list(RINGS)}")
        try:
            profile = np.asarray(values["profile"], np.float64)
            numbers = [float(values[key]) for key in ("slope", "intercept", "spread", "fov_diameter")]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"vessel profile: missing or malformed value ({error})") from None
        if profile.shape != (len(RINGS),) or not np.isfinite(profile).all() or not np.isfinite(numbers).all() \
                or numbers[3] <= 0:
            raise ValueError("vessel profile: a profile of one finite value per ring and a positive fov_diameter")
        return cls(profile, *numbers)
