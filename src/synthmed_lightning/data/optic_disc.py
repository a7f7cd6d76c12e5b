"""The photographs' optic disc, a bright round patch where the thick vessels meet, given to paintings.

Why: Stage II paints the vessels converging but no disc (DRIVE: the green channel there is about
the background's, against twice it in the photographs). A U-Net trained on such paintings has never
seen the disc's rim, a sharp bright-to-dark edge, and on real photographs marks it as vessel
(150-290 false-positive px per DRIVE test image within 60 px of the disc, against 30 for the U-Net
trained on the photographs).

The disc is found from the mask, so it can be put on any painting: the *hub* is where the vessels
wider than 2 px are densest (Gaussian density, `_HUB_SIGMA`). In a photograph the disc's centre is
its brightest point near the hub; it lies a little towards the FOV's centre from the hub.
`OpticDisc.fit` keeps, over the photographs:

* `profile`: per colour channel, the median over the photographs of the log brightness of each
  3 px ring around the disc's centre relative to the band 90-120 px out (vessels left out);
* the mean shift of the centre from the hub towards the FOV's centre;
* the spreads of the disc's size and brightness (log std), drawn per image.

Only these numbers are kept (plain JSON for a checkpoint). `apply` measures the painting's own rings
around the same point and multiplies each by ``exp(target - painted)``, vessels included, so a
vessel on the disc keeps its contrast. A mask with no vessel wider than 2 px (nothing to find the
disc by) leaves the painting as it is. Everything scales with the FOV's diameter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from synthmed_lightning.data.vessel_profile import thin_vessels

__all__ = ["RING_COUNT", "RING_WIDTH", "OpticDisc", "disc_profile", "find_hub"]

FORMAT = "synthmed-optic-disc/1"
RING_WIDTH = 3.0       # px (at the photographs' FOV diameter)
RING_COUNT = 30        # rings out to 90 px: the disc (radius ~30 px on DRIVE) and its halo
_BAND = 30.0           # px: the reference band beyond the rings
_HUB_SIGMA = 20.0      # px: the thick-vessel density's Gaussian
_SEARCH = 70.0         # px: a photograph's disc is its brightest point this close to the hub
_BRIGHT_SIGMA = 10.0   # px: the brightness the disc centre is the maximum of
_GAIN = (0.5, 3.0)
_Z_CLIP = 2.0
_SEED_STREAM = 0x0D15C  # keeps this model's draws apart from the colour's and the vessels' for the same seed


def find_hub(mask: np.ndarray, fov: np.ndarray, scale: float = 1.0) -> tuple[float, float] | None:
    """(row, col) where a mask's vessels wider than 2 px are densest inside the FOV, or None for a
    mask without any. `scale`: px per photograph px."""
    thick = (mask > 0) & ~thin_vessels(mask) & (fov > 0)
    if not thick.any():
        return None
    density = cv2.GaussianBlur(thick.astype(np.float32), (0, 0), _HUB_SIGMA * scale)
    row, col = np.unravel_index(np.argmax(np.where(fov > 0, density, -1.0)), density.shape)
    return float(row), float(col)


def _towards_centre(point: tuple[float, float], fov: np.ndarray) -> np.ndarray:
    """Unit (row, col) vector from `point` to the FOV's centroid (0 at the centroid)."""
    rows, cols = np.nonzero(fov)
    step = np.array([rows.mean() - point[0], cols.mean() - point[1]])
    return step / max(float(np.linalg.norm(step)), 1e-6)


def _photo_centre(image: np.ndarray, mask: np.ndarray, fov: np.ndarray, hub: tuple[float, float],
                  scale: float) -> tuple[float, float]:
    """The brightest point of a photograph's background (green, blurred, vessels left out: they
    cross the disc unevenly) near the hub: its disc's centre."""
    weight = ((fov > 0) & (mask == 0)).astype(np.float32)
    sigma = _BRIGHT_SIGMA * scale
    green = cv2.GaussianBlur(image[..., 1].astype(np.float32) * weight, (0, 0), sigma) \
        / np.maximum(cv2.GaussianBlur(weight, (0, 0), sigma), 1e-3)
    rows, cols = np.indices(green.shape)
    near = (fov > 0) & (np.hypot(rows - hub[0], cols - hub[1]) < _SEARCH * scale)
    row, col = np.unravel_index(np.argmax(np.where(near, green, -1.0)), green.shape)
    return float(row), float(col)


def _radius(shape: tuple[int, int], centre: tuple[float, float], scale: float) -> np.ndarray:
    """(H, W) each pixel's distance to `centre`, in photograph px at the disc's drawn size (/ scale)."""
    return np.hypot(*(np.indices(shape) - np.array(centre)[:, None, None])) / scale


def disc_profile(image: np.ndarray, mask: np.ndarray, fov: np.ndarray, centre: tuple[float, float],
                 scale: float = 1.0, radius_scale: float = 1.0) -> np.ndarray | None:
    """(RING_COUNT, 3) log of each ring's median background colour around `centre` relative to the
    band beyond the rings (NaN for a ring without background), rings `RING_WIDTH * scale *
    radius_scale` px wide; None when the band has too little background or is black."""
    return _ring_profile(image, mask, fov, _radius(fov.shape, centre, scale * radius_scale))


def _ring_profile(image: np.ndarray, mask: np.ndarray, fov: np.ndarray, radius: np.ndarray) -> np.ndarray | None:
    """`disc_profile` from each pixel's scaled distance to the centre."""
    near_vessel = cv2.dilate((mask > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    background = (fov > 0) & ~near_vessel
    band = background & (radius >= RING_COUNT * RING_WIDTH) & (radius < RING_COUNT * RING_WIDTH + _BAND)
    if band.sum() < 32:
        return None
    reference = np.median(image[band].astype(np.float64), axis=0)
    if (reference < 1.0).any():
        return None
    ring = np.floor(radius / RING_WIDTH).astype(np.int64)
    out = np.full((RING_COUNT, 3), np.nan)
    for k in range(RING_COUNT):
        pixels = image[background & (ring == k)]
        if len(pixels) >= 8:
            out[k] = np.log(np.maximum(np.median(pixels.astype(np.float64), axis=0), 1.0) / reference)
    return out


@dataclass
class OpticDisc:
    """The photographs' median disc profile, where it lies from the hub, and its spreads; see the module."""

    profile: np.ndarray     # (RING_COUNT, 3) log ring colour / band colour
    shift: float            # px from the hub towards the FOV's centre
    size_spread: float      # std of log disc radius
    brightness_spread: float  # std of log disc brightness (relative to the median's)
    fov_diameter: float     # px: the photographs' mean FOV diameter

    @classmethod
    def fit(cls, images: Iterable[np.ndarray], masks: Iterable[np.ndarray], fovs: Iterable[np.ndarray],
            fov_diameters: Iterable[float]) -> OpticDisc:
        """Fit to real RGB photographs (H, W, 3) with their vessel masks, FOVs and FOV diameters."""
        images, masks, fovs, diameters = list(images), list(masks), list(fovs), list(fov_diameters)
        if not images or not len(images) == len(masks) == len(fovs) == len(diameters):
            raise ValueError(f"fit needs one mask, FOV and diameter per image (got {len(images)} images, "
                             f"{len(masks)} masks, {len(fovs)} FOVs, {len(diameters)} diameters)")
        mean_diameter = float(np.mean(diameters))
        profiles, shifts = [], []
        for image, mask, fov, diameter in zip(images, masks, fovs, diameters):
            scale = diameter / mean_diameter
            hub = find_hub(mask, fov, scale)
            if hub is None:
                continue
            centre = _photo_centre(image, mask, fov, hub, scale)
            profile = disc_profile(image, mask, fov, centre, scale)
            if profile is not None:
                profiles.append(profile)
                shifts.append(float(np.dot(np.subtract(centre, hub), _towards_centre(hub, fov))) / scale)
        if not profiles:
            raise ValueError("fit: no photograph has thick vessels and room around them to measure a disc")
        stacked = np.stack([_fill_rings(p) for p in profiles])  # rings all on vessels: from their neighbours
        profile = np.median(stacked, axis=0)
        green = stacked[..., 1]
        brightness = green[:, :6].mean(axis=1)  # the disc's inner 18 px
        half = [h for h in map(_half_radius, green) if h]
        size_spread = float(np.std(np.log(half))) if len(half) > 2 else 0.0
        relative = np.maximum(brightness, 1e-3) / max(float(np.median(brightness)), 1e-3)
        brightness_spread = float(np.std(np.log(relative))) if len(relative) > 2 else 0.0
        return cls(profile, float(np.mean(shifts)), size_spread, brightness_spread, mean_diameter)

    @classmethod
    def fit_samples(cls, samples: Iterable) -> OpticDisc:
        """`fit` on `Sample`s (image, mask, fov, fov_diameter), as the readers return them."""
        samples = list(samples)
        return cls.fit([s.image for s in samples], [s.mask for s in samples], [s.fov for s in samples],
                       [s.fov_diameter for s in samples])

    def centre(self, mask: np.ndarray, fov: np.ndarray, fov_diameter: float | None = None) -> tuple[float, float] | None:
        """Where the disc goes on a painting of this mask: the hub moved by `shift`; None without a hub."""
        scale = (fov_diameter or self.fov_diameter) / self.fov_diameter
        hub = find_hub(mask, fov, scale)
        if hub is None:
            return None
        return tuple(float(v) for v in np.add(hub, self.shift * scale * _towards_centre(hub, fov)))

    def draw(self, seed: int) -> tuple[float, float]:
        """(radius scale, brightness scale) this seed draws: 1, 1 is the median photograph's disc."""
        z = np.clip(np.random.default_rng([seed, _SEED_STREAM]).standard_normal(2), -_Z_CLIP, _Z_CLIP)
        return float(np.exp(self.size_spread * z[0])), float(np.exp(self.brightness_spread * z[1]))

    def apply(self, image: np.ndarray, mask: np.ndarray, fov: np.ndarray, seed: int,
              fov_diameter: float | None = None) -> np.ndarray:
        """The RGB uint8 image (H, W, 3) with a disc drawn for this seed around `centre`; beyond the
        rings, outside the FOV, or for a mask without a hub it is unchanged. Same seed, same bytes."""
        centre = self.centre(mask, fov, fov_diameter)
        if centre is None:
            return image.copy()
        size, brightness = self.draw(seed)
        radius = _radius(fov.shape, centre, (fov_diameter or self.fov_diameter) / self.fov_diameter * size)
        painted = _ring_profile(image, mask, fov, radius)
        if painted is None:
            return image.copy()
        log_gain = np.clip(brightness * self.profile - _fill_rings(painted), *np.log(_GAIN))
        centres = (np.arange(RING_COUNT) + 0.5) * RING_WIDTH
        gain = np.stack([np.exp(np.interp(radius, centres, log_gain[:, c], right=0.0)) for c in range(3)], axis=-1)
        out = np.where((fov > 0)[..., None], image.astype(np.float64) * gain, image)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    # ---- persistence -----------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON: floats and a list of per-ring [R, G, B] log ratios."""
        return {"format": FORMAT, "rings": RING_COUNT, "ring_width": RING_WIDTH, "profile": self.profile.tolist(),
                "shift": self.shift, "size_spread": self.size_spread, "brightness_spread": self.brightness_spread,
                "fov_diameter": self.fov_diameter}

    @classmethod
    def from_dict(cls, values: dict) -> OpticDisc:
        """Rebuild from `to_dict`'s output. Data from elsewhere: another format or ring layout, a
        missing, malformed or non-finite value is refused with a ValueError."""
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            raise ValueError(f"not an optic-disc model (expected format {FORMAT!r})")
        if values.get("rings") != RING_COUNT or values.get("ring_width") != RING_WIDTH:
            raise ValueError(f"optic-disc model with rings {values.get('rings')} x {values.get('ring_width')} px; "
                             f"this version uses {RING_COUNT} x {RING_WIDTH}")
        try:
            profile = np.asarray(values["profile"], np.float64)
            numbers = [float(values[key]) for key in ("shift", "size_spread", "brightness_spread", "fov_diameter")]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"optic-disc model: missing or malformed value ({error})") from None
        if profile.shape != (RING_COUNT, 3) or not np.isfinite(profile).all() or not np.isfinite(numbers).all() \
                or min(numbers[1:]) < 0 or numbers[3] <= 0:
            raise ValueError("optic-disc model: one finite [R, G, B] per ring, spreads >= 0 and a positive fov_diameter")
        return cls(profile, *numbers)


def _fill_rings(profile: np.ndarray) -> np.ndarray:
    """(RING_COUNT, 3) with each NaN ring (all its pixels on vessels) interpolated from the nearest
    rings that have a value, per channel; 0 (the background's level) for a channel with none."""
    out = np.zeros_like(profile)
    rings = np.arange(len(profile))
    for c in range(profile.shape[1]):
        known = np.isfinite(profile[:, c])
        if known.any():
            out[:, c] = np.interp(rings, rings[known], profile[known, c])
    return out


def _half_radius(green_log_profile: np.ndarray) -> float | None:
    """px at which a disc's green log brightness first falls below half its inner value; None for a
    disc no brighter than the background or one that never falls."""
    inner = green_log_profile[:3].mean()
    if inner <= 0:
        return None
    below = np.flatnonzero(green_log_profile < inner / 2)
    return float((below[0] + 0.5) * RING_WIDTH) if below.size else None
