"""Photographic nuisances of real fundus photographs: measured on real images, added to paintings.

Why: Stage II (pix2pix) paints smooth, clean fundus images: no choroidal texture, no sensor noise,
little variation of the illumination fall-off, a soft disc rim. A U-Net trained on them marks the
background clutter of real photographs as vessel (DRIVE, quick profile: specificity 0.931 against
0.977, f1_vessel 0.71 against 0.82 for real training data). A crude hand-made nuisance model
applied to the paintings already raised the U-Net from 0.725 to 0.772; this one is fitted to the
real images instead.

`NuisanceModel.fit` measures per image, inside the FOV and away from the (dilated) vessels:

* the energy of the log-intensity in seven octave bands, per channel, with the correlation of
  the channels in each band: differences of Gaussian blurs at 0-1-2-4-8-16-32-64 px (fine noise
  ~1-2 px, texture ~4-16 px, blotches ~32-64 px), computed on a pyramid;
* the illumination (the log-intensity blurred at 64 px): its radial fall-off towards the FOV
  edge, and the unevenness the radial fit leaves;
* the blur of the strongest edges (vessels, disc rim), from gradient energies at two scales.

Only the mean and spread of these numbers over the images are kept, never an image, so the model
is plain JSON (`to_dict`/`from_dict`) for a checkpoint or a manifest. `NuisanceModel.apply` draws
one set of targets per seed and moves a painting towards it: a mild blur or sharpening, the drawn
fall-off and unevenness, then a random multiplicative texture whose band energies are what the
target has MINUS what the painting already has (never negative; the finest band is the sensor
noise). The texture multiplies vessels and background alike and the blur is capped at 0.5 px
(thin vessels fade fast), so vessel contrast survives. The mask is never touched. numpy and
OpenCV only, deterministic per seed, ~0.1 s for a 565x584 image; the noise generators are
calibrated once per process (~0.3 s) and once per FOV (~0.3 s; an export uses one FOV).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

__all__ = ["BAND_GROUPS", "BAND_SIGMAS", "NuisanceModel", "band_energies", "edge_blur", "measure"]

FORMAT = "synthmed-nuisance/1"
#: Upper blur scale (px) of each octave band: band k is blur(s[k-1]) - blur(s[k]), band 0 the image
#: minus its blur at 1 px. The blur at the last scale is the illumination.
BAND_SIGMAS = (1, 2, 4, 8, 16, 32, 64)
#: Bands summarised together in reports: sensor noise, choroidal texture, blotches.
BAND_GROUPS = {"fine": (0, 1), "texture": (2, 3, 4), "blotch": (5, 6)}
_CHANNELS = ("R", "G", "B")
_FOV_MARGIN = 8            # px: the dark rim of the FOV is not texture
_EDGE_MARGIN = 16          # px: nor is the FOV border an edge of the picture
_VESSEL_DILATE = 3         # px around vessels left out of the background statistics
_EDGE_SCALES = (1.0, 2.0)  # gradient scales of the edge-blur estimate
_MAX_BLUR = 0.5            # px: the most blur apply adds ("mild": thin vessels fade fast)
_MAX_SHARPEN = 0.5         # the largest unsharp-mask amount apply uses
_Z_CLIP = 2.0              # targets are drawn within +-2 spreads of the real mean


# --------------------------------------------------------------------------- #
# geometry and regions
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Fov:
    """A FOV mask with what every step needs from it, computed once."""

    mask: np.ndarray      # (H, W) bool
    cx: float
    cy: float
    radius: float         # half the horizontal extent, as `Sample.fov_diameter`
    depth: np.ndarray     # (H, W) distance to the nearest pixel outside the FOV

    @classmethod
    def of(cls, fov: np.ndarray) -> _Fov:
        mask = np.asarray(fov) > 0
        u8 = mask.astype(np.uint8)
        moments = cv2.moments(u8, binaryImage=True)
        columns = np.flatnonzero(mask.any(axis=0))
        h, w = mask.shape
        if columns.size == 0:
            cx, cy, radius = (w - 1) / 2.0, (h - 1) / 2.0, min(h, w) / 2.0
        else:
            cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
            radius = (columns[-1] - columns[0] + 1) / 2.0
        depth = cv2.distanceTransform(np.pad(u8, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
        return cls(mask, float(cx), float(cy), float(radius), depth)

    def inner(self, margin: float) -> np.ndarray:
        return self.depth > margin

    def radius_squared(self, step: int = 1, shape: tuple[int, int] | None = None) -> np.ndarray:
        """(distance to the centre / radius)^2 on the grid of every `step`-th pixel (at the centres
        of the blocks the pyramid averages), of `shape` (default: the image's)."""
        h, w = shape or self.mask.shape
        ys = (np.arange(h, dtype=np.float32)[:, None] + 0.5) * step - 0.5
        xs = (np.arange(w, dtype=np.float32)[None, :] + 0.5) * step - 0.5
        return (((xs - self.cx) ** 2 + (ys - self.cy) ** 2) / self.radius**2).astype(np.float32)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _check(image: np.ndarray, fov: np.ndarray) -> tuple[np.ndarray, _Fov]:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    fov = np.asarray(fov)
    if fov.shape != image.shape[:2]:
        raise ValueError(f"FOV shape {fov.shape} does not match the image's {image.shape[:2]}")
    return image, _Fov.of(fov)


def _log_image(image: np.ndarray) -> np.ndarray:
    return np.log1p(np.asarray(image, np.float32))


def _estimate_vessels(log_image: np.ndarray, fov: _Fov) -> np.ndarray:
    """Vessel pixels of an image without a mask: the strongest 15 % of a green black-hat (dark
    lines narrower than ~2.5 % of the FOV diameter)."""
    size = max(5, round(0.025 * 2.0 * fov.radius) | 1)
    blackhat = cv2.morphologyEx(log_image[..., 1], cv2.MORPH_BLACKHAT, _disk(size // 2))
    inside = blackhat[fov.mask]
    if inside.size == 0:
        return np.zeros_like(fov.mask)
    return (blackhat > np.quantile(inside, 0.85)) & fov.mask


def _background_weight(log_image: np.ndarray, fov: _Fov, mask: np.ndarray | None) -> np.ndarray:
    """float32 (H, W): 1 inside the FOV (less its rim) away from the dilated vessels, else 0."""
    vessels = _estimate_vessels(log_image, fov) if mask is None else np.asarray(mask) > 0
    if vessels.shape != fov.mask.shape:
        raise ValueError(f"vessel mask shape {vessels.shape} does not match the image's {fov.mask.shape}")
    near_vessel = cv2.dilate(vessels.astype(np.uint8), _disk(_VESSEL_DILATE)) > 0
    weight = fov.inner(_FOV_MARGIN) & ~near_vessel
    if weight.sum() < 64:  # a tiny or vessel-filled FOV: fall back to the whole FOV
        weight = fov.mask
    return weight.astype(np.float32)


# --------------------------------------------------------------------------- #
# analysis
# --------------------------------------------------------------------------- #
def _gauss(x: np.ndarray, sigma: float, border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=border)


def _normalised(num: np.ndarray, den: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised convolution: blur(x * w) / blur(w) for num = x * w, den = w. Pixels of zero
    weight (vessels, outside the FOV, outside the image) are missing data, not dark background."""
    blurred = _gauss(num, sigma)
    scale = 1.0 / np.maximum(_gauss(den, sigma), 1e-4)
    return blurred * (scale[..., None] if blurred.ndim == 3 else scale)


def _band_level(k: int) -> int:
    """Pixel step of the grid band k is computed on: bands 0-2 at full resolution, band k
    (scales s to 2s) on every (s/2)-th pixel, where it is a few pixels wide (a pyramid)."""
    return 1 if k < 3 else BAND_SIGMAS[k - 1] // 2


def _bands(log_image: np.ndarray, weight: np.ndarray, coarse_only: bool = False):
    """Octave bands of a (H, W, 3) log image as [(band, its weight)], each on its own grid
    (`_band_level`); then the illumination and its weight on the coarsest grid. `coarse_only`
    leaves bands 0-2 empty (calibration of coarse noise, which has nothing there)."""
    h, w = weight.shape
    top = _band_level(len(BAND_SIGMAS) - 1)
    # pad with zero weight so that every level is an exact block average of the one above
    num = np.pad(log_image * weight[..., None], ((0, -h % top), (0, -w % top), (0, 0)))
    den = np.pad(weight, ((0, -h % top), (0, -w % top)))
    if coarse_only:
        bands = [(np.zeros((1, 1, 3), np.float32), np.ones((1, 1), np.float32))] * 3
    else:
        full = [log_image] + [_normalised(num, den, s)[:h, :w] for s in BAND_SIGMAS[:3]]
        bands = [(full[k] - full[k + 1], weight) for k in range(3)]
    level = 1
    for k in range(3, len(BAND_SIGMAS)):
        while level < _band_level(k):
            size = (num.shape[1] // 2, num.shape[0] // 2)
            num = cv2.resize(num, size, interpolation=cv2.INTER_AREA)
            den = cv2.resize(den, size, interpolation=cv2.INTER_AREA)
            level *= 2
        # blur at 2 and 4 grid pixels, less what the block averaging blurred already (1/12 px^2)
        low, high = (_normalised(num, den, math.sqrt((s / level) ** 2 - 1.0 / 12.0)) for s in BAND_SIGMAS[k - 1:k + 1])
        bands.append((low - high, den))
    return bands, high, den


def _band_statistics(log_image: np.ndarray, weight: np.ndarray, correlations: bool = True, coarse_only: bool = False):
    """(3, 7) band energies (weighted mean squares), (7, 3) channel correlations per band
    (RG, RB, GB; zeros unless asked for), and the illumination with its weight."""
    bands, illumination, illumination_weight = _bands(log_image, weight, coarse_only)
    energies = np.zeros((3, len(bands)))
    corr = np.zeros((len(bands), 3))
    for k, (band, w) in enumerate(bands):
        total = max(float(w.sum()), 1e-6)
        if not correlations:  # energies only (apply): cheaper
            if k < 3:  # full resolution, where the weight is 0 or 1
                energies[:, k] = cv2.mean(band * band, mask=(w > 0).astype(np.uint8))[:3]
            else:
                energies[:, k] = ((band * band) * w[..., None]).reshape(-1, 3).sum(axis=0) / total
            continue
        flat = band.reshape(-1, 3)
        cov = ((flat * w.reshape(-1, 1)).T @ flat).astype(np.float64) / total
        energies[:, k] = np.diag(cov)
        std = np.sqrt(np.maximum(np.diag(cov), 1e-20))
        c = cov / np.outer(std, std)
        corr[k] = [c[0, 1], c[0, 2], c[1, 2]]
    return energies, np.clip(corr, -1.0, 1.0), illumination, illumination_weight


def _radial_fit(values: np.ndarray, rho2: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted fit values ~ a + b r^2 over grid cells mostly inside the measured background:
    (2, C) coefficients and the (C,) weighted spread of the residual."""
    keep = weight > 0.5
    if keep.sum() < 4:
        return np.zeros((2, values.shape[-1])), np.zeros(values.shape[-1])
    wt = weight[keep].astype(np.float64)[:, None]
    design = np.stack([np.ones(int(keep.sum())), rho2[keep].astype(np.float64)], axis=1)
    v = values[keep].astype(np.float64).reshape(len(wt), -1)
    coef = np.linalg.lstsq(design * np.sqrt(wt), v * np.sqrt(wt), rcond=None)[0]
    residual = v - design @ coef
    return coef, np.sqrt((wt * residual**2).sum(axis=0) / wt.sum())


def _analyse(log_image: np.ndarray, fov: _Fov, weight: np.ndarray, correlations: bool = True):
    """energies (3, 7), correlations (7, 3), fall-off (3,) (log drop from the FOV centre to its
    edge) and unevenness (3,) of a log image."""
    energies, corr, illumination, illumination_weight = _band_statistics(log_image, weight, correlations)
    rho2 = fov.radius_squared(_band_level(len(BAND_SIGMAS) - 1), illumination.shape[:2])
    coef, unevenness = _radial_fit(illumination, rho2, illumination_weight)
    return energies, corr, -coef[1], unevenness


def _edge_blur(green_log: np.ndarray, fov: _Fov) -> float:
    inner = fov.inner(_EDGE_MARGIN)
    if inner.sum() < 64:
        return float("nan")
    energy = []
    for scale in _EDGE_SCALES:
        smooth = _gauss(green_log, scale, cv2.BORDER_REFLECT)
        gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=1)
        gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=1)
        energy.append(gx * gx + gy * gy)
    strongest = (energy[1] > np.quantile(energy[1][inner], 0.95)) & inner
    region = (cv2.dilate(strongest.astype(np.uint8), _disk(int(2 * _EDGE_SCALES[1]))) > 0) & inner
    q = math.sqrt(float(energy[0][region].sum()) / max(float(energy[1][region].sum()), 1e-20))
    t1, t2 = _EDGE_SCALES
    if q <= 1.0 + 1e-6:
        return float("inf")
    return math.sqrt(max((t2**2 - q**2 * t1**2) / (q**2 - 1.0), 0.0))


def edge_blur(image: np.ndarray, fov: np.ndarray) -> float:
    """Blur (px) of the strongest edges (vessels, disc rim) of the green channel.

    The gradient energy around a step blurred by s, taken at scale t, falls as 1/sqrt(s^2 + t^2);
    the ratio q of the energies at scales t1 < t2 gives s^2 = (t2^2 - q^2 t1^2) / (q^2 - 1). On
    DRIVE it reads ~1.1 px, and sqrt(1.1^2 + b^2) after a further Gaussian blur b. Noise makes it
    read a little sharp; it is a consistent index rather than an exact one.
    """
    image, fov = _check(image, fov)
    return _edge_blur(_log_image(image[..., 1]), fov)


def measure(image: np.ndarray, fov: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Nuisance statistics of one RGB image (H, W, 3), values 0-255, inside its FOV and away from
    vessels: the numbers `NuisanceModel.fit` aggregates.

    `mask` (the vessels) is optional; without it they are estimated (a green black-hat). Returns
    numpy values: band_energy (3, 7), band_corr (7, 3), falloff (3,), unevenness (3,), edge_blur,
    fov_diameter.
    """
    image, fov = _check(image, fov)
    log_image = _log_image(image)
    weight = _background_weight(log_image, fov, mask)
    energies, corr, falloff, unevenness = _analyse(log_image, fov, weight)
    return {"band_energy": energies, "band_corr": corr, "falloff": falloff, "unevenness": unevenness,
            "edge_blur": _edge_blur(log_image[..., 1], fov), "fov_diameter": 2.0 * fov.radius}


def band_energies(image: np.ndarray, fov: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(3, 7) energies (variance of the log-intensity) of the background in the octave bands."""
    image, fov = _check(image, fov)
    log_image = _log_image(image)
    return _band_statistics(log_image, _background_weight(log_image, fov, mask), correlations=False)[0]


# --------------------------------------------------------------------------- #
# synthesis
# --------------------------------------------------------------------------- #
def _blur_reflect(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a noise field; large scales on a downsampled copy."""
    if sigma <= 2.5:
        return _gauss(x, sigma, cv2.BORDER_REFLECT)
    f = 2 ** math.floor(math.log2(sigma / 2.0))  # sigma / f in [2, 4)
    if f == 1:
        return _gauss(x, sigma, cv2.BORDER_REFLECT)
    h, w = x.shape[:2]
    small = cv2.resize(x, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
    # area downsampling and bilinear upsampling add about f/2 of blur themselves
    small = _gauss(small, math.sqrt(max((sigma / f) ** 2 - 0.25, 0.25)), cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(x.shape)


def _band_noise(rng: np.random.Generator, k: int, height: int, width: int, mix: np.ndarray | None = None) -> np.ndarray:
    """Random (H, W, 3) field with its energy mostly in band k: white noise band-passed on a grid
    where the band is a few pixels wide, its channels mixed (out = mix @ in per pixel), upsampled.
    Its energy in every band is calibrated once (`_leakage`), so only its shape matters."""
    low = 0.0 if k == 0 else float(BAND_SIGMAS[k - 1])
    f = max(1, int(low) // 2)
    h, w = (height, width) if f == 1 else (-(-height // f) + 1, -(-width // f) + 1)
    # uniform bytes are five times faster to draw than normals; the band-pass removes their mean,
    # and a blurred sum of many is Gaussian (the finest band stays uniform: fine for sensor noise)
    white = rng.integers(0, 256, (h, w, 3), dtype=np.uint8).astype(np.float32)
    # the band-pass g_a - g_b applied twice (narrower: less spills into the neighbouring bands),
    # as one sum: (g_a - g_b)^2 = g_(a sqrt 2) - 2 g_sqrt(a^2 + b^2) + g_(b sqrt 2), g_0 the identity
    a, b = low / f, BAND_SIGMAS[k] / f
    first = white if k == 0 else _blur_reflect(white, a * math.sqrt(2.0))
    field = first - 2.0 * _blur_reflect(white, math.hypot(a, b)) + _blur_reflect(white, b * math.sqrt(2.0))
    if mix is not None:
        field = cv2.transform(field, np.asarray(mix, np.float32))
    if f > 1:
        field = cv2.resize(field, (w * f, h * f), interpolation=cv2.INTER_LINEAR)[:height, :width]
    return field


@lru_cache(maxsize=1)
def _leakage_unbounded() -> np.ndarray:
    """(7, 7): energy measured in band i (row) of generator j's noise (column, unit mix), on an
    unbounded field.

    Octave bands overlap, so noise made for one band shows in its neighbours too; apply solves for
    the band amplitudes through this matrix instead of assuming the bands independent. Computed
    once per process from a fixed seed (~0.3 s); coarse generators on a larger field, since a
    field holds few of their blobs."""
    rng = np.random.default_rng(20170321)
    m = np.zeros((len(BAND_SIGMAS), len(BAND_SIGMAS)))
    for j in range(len(BAND_SIGMAS)):
        coarse = j >= 4  # nothing left at full resolution: skip it, measure a larger field
        size = 1024 if coarse else 512
        field = _band_noise(rng, j, size, size)
        m[:, j] = _band_statistics(field, np.ones((size, size), np.float32), False, coarse)[0].mean(axis=0)
    return m


_LEAKAGE_BY_FOV: OrderedDict = OrderedDict()


def _leakage(fov: _Fov) -> np.ndarray:
    """`_leakage_unbounded` with its coarse block (bands and generators 3-6) measured inside this
    FOV: a window a few blobs wide reads less energy in the coarsest bands (its own mean takes
    some), and a painting is read through that window. Cached per FOV (export writes one FOV for
    every image); ~0.2 s for each new one."""
    region = fov.inner(_FOV_MARGIN)
    key = (region.shape, hashlib.sha1(np.packbits(region).tobytes()).hexdigest())
    if key in _LEAKAGE_BY_FOV:
        _LEAKAGE_BY_FOV.move_to_end(key)
        return _LEAKAGE_BY_FOV[key]
    m = _leakage_unbounded().copy()
    if region.sum() >= 64:
        rng = np.random.default_rng(20170322)
        weight = region.astype(np.float32)
        h, w = region.shape
        for j in range(3, len(BAND_SIGMAS)):
            draws = 4 if j < 5 else 12  # the coarsest have the fewest blobs per image
            total = np.zeros(len(BAND_SIGMAS))
            for _ in range(draws):
                total += _band_statistics(_band_noise(rng, j, h, w), weight, False, True)[0].mean(axis=0)
            m[3:, j] = total[3:] / draws
    _LEAKAGE_BY_FOV[key] = m
    while len(_LEAKAGE_BY_FOV) > 8:
        _LEAKAGE_BY_FOV.popitem(last=False)
    return m


def _nonnegative_least_squares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min ||a x - b|| subject to x >= 0 (Lawson and Hanson's active set method)."""
    n = a.shape[1]
    passive = np.zeros(n, bool)
    x = np.zeros(n)
    tol = 1e-10 * max(float(np.abs(a).max()), 1e-30) * max(float(np.abs(b).max()), 1e-30)
    for _ in range(3 * n):
        gradient = a.T @ (b - a @ x)
        if passive.all() or gradient[~passive].max() <= tol:
            break
        passive[np.argmax(np.where(passive, -np.inf, gradient))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if z[passive].min() > 0:
                x = z
                break
            blocked = passive & (z <= 0)
            x = x + float(np.min(x[blocked] / (x[blocked] - z[blocked]))) * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
            if not passive.any():
                break
    return x


def _mixing(rg_rb_gb: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """A (3, 3) matrix A with A A^T = the covariance of these channel variances and correlations."""
    rg, rb, gb = (float(v) for v in rg_rb_gb)
    corr = np.array([[1.0, rg, rb], [rg, 1.0, gb], [rb, gb, 1.0]])
    sd = np.sqrt(np.maximum(variances, 0.0))
    values, vectors = np.linalg.eigh(corr * np.outer(sd, sd))
    return vectors * np.sqrt(np.maximum(values, 0.0))


def _coarse(weight: np.ndarray) -> tuple[int, np.ndarray]:
    """The illumination's grid step and the weight block-averaged onto it (as `_bands` does)."""
    step = _band_level(len(BAND_SIGMAS) - 1)
    h, w = weight.shape
    gh, gw = -(-h // step), -(-w // step)
    den = cv2.resize(np.pad(weight, ((0, gh * step - h), (0, gw * step - w))), (gw, gh), interpolation=cv2.INTER_AREA)
    return step, den


def _as_measured(grid: np.ndarray, den: np.ndarray, rho2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radial fit (2, 1) and unevenness (1,) that `measure` reads in a field given on the coarse grid."""
    smooth = _normalised(grid * den, den, math.sqrt((BAND_SIGMAS[-1] / _band_level(len(BAND_SIGMAS) - 1)) ** 2 - 1.0 / 12.0))
    return _radial_fit(smooth[..., None], rho2, den)


def _falloff_gain(fov: _Fov, weight: np.ndarray) -> float:
    """How much of a fall-off r^2 added to an image `measure` reads: the illumination blur
    flattens it near the FOV edge, where it sees only pixels further in (about 0.7)."""
    step, den = _coarse(weight)
    rho2 = fov.radius_squared(step, den.shape)
    gain = float(_as_measured(rho2, den, rho2)[0][1, 0])
    return gain if gain > 0.2 else 1.0


def _unevenness_field(rng: np.random.Generator, fov: _Fov, weight: np.ndarray) -> np.ndarray:
    """(H, W) very smooth random field (a few bumps across the FOV) without a radial trend, scaled
    so that `measure` reads an unevenness of 1 in it: it is built on the illumination's coarse
    grid and measured there as `measure` does, then upsampled."""
    step, den = _coarse(weight)
    (gh, gw), (h, w) = den.shape, fov.mask.shape
    grid = cv2.resize(rng.standard_normal((4, 4)).astype(np.float32), (gw, gh), interpolation=cv2.INTER_CUBIC)
    rho2 = fov.radius_squared(step, (gh, gw))
    coef, spread = _as_measured(grid, den, rho2)
    if spread[0] <= 1e-6:
        return np.zeros((h, w), np.float32)
    grid = (grid - coef[0, 0] - coef[1, 0] * rho2) / float(spread[0])
    return cv2.resize(grid, (gw * step, gh * step), interpolation=cv2.INTER_CUBIC)[:h, :w]


def _sharpen_or_blur(image: np.ndarray, fov: _Fov, blur: float, sharpen: float) -> np.ndarray:
    """Blur by `blur` px, or unsharp-mask with amount `sharpen` at 1 px, from FOV pixels only so
    the black outside does not bleed into the rim."""
    if blur <= 0.05 and sharpen <= 0.01:
        return image
    weight = fov.mask.astype(np.float32)
    smooth = _normalised(image * weight[..., None], weight, blur if blur > 0.05 else 1.0)
    return smooth if blur > 0.05 else image + sharpen * (image - smooth)


def _seed_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) % (1 << 64), 0x6E75]))


# --------------------------------------------------------------------------- #
# the model
# --------------------------------------------------------------------------- #
def _floats(values) -> list:
    return np.asarray(values, np.float64).tolist()


class NuisanceModel:
    """Mean and spread over real images of the statistics `measure` returns.

    Attributes (numpy unless said): log_energy_mean, log_energy_std (3, 7), natural log of the band
    energies per channel (R, G, B) and band (`BAND_SIGMAS`); band_corr (7, 3), mean channel
    correlations per band (RG, RB, GB); falloff_mean, falloff_std, unevenness_mean, unevenness_std
    (3,), log units; edge_blur_mean, edge_blur_std, fov_diameter (float, px); count (int, images).
    """

    def __init__(self, log_energy_mean, log_energy_std, band_corr, falloff_mean, falloff_std,
                 unevenness_mean, unevenness_std, edge_blur_mean, edge_blur_std, fov_diameter, count):
        bands = len(BAND_SIGMAS)
        self.log_energy_mean = np.asarray(log_energy_mean, np.float64).reshape(3, bands)
        self.log_energy_std = np.asarray(log_energy_std, np.float64).reshape(3, bands)
        self.band_corr = np.asarray(band_corr, np.float64).reshape(bands, 3)
        self.falloff_mean = np.asarray(falloff_mean, np.float64).reshape(3)
        self.falloff_std = np.asarray(falloff_std, np.float64).reshape(3)
        self.unevenness_mean = np.asarray(unevenness_mean, np.float64).reshape(3)
        self.unevenness_std = np.asarray(unevenness_std, np.float64).reshape(3)
        self.edge_blur_mean = float(edge_blur_mean)
        self.edge_blur_std = float(edge_blur_std)
        self.fov_diameter = float(fov_diameter)
        self.count = int(count)
        arrays = (self.log_energy_mean, self.log_energy_std, self.band_corr, self.falloff_mean,
                  self.falloff_std, self.unevenness_mean, self.unevenness_std)
        scalars = (self.edge_blur_mean, self.edge_blur_std, self.fov_diameter)
        if not all(np.isfinite(a).all() for a in arrays) or not all(math.isfinite(v) for v in scalars):
            raise ValueError("nuisance model: every value must be finite")
        spreads = (self.log_energy_std, self.falloff_std, self.unevenness_std, self.unevenness_mean)
        if any((a < 0).any() for a in spreads) or self.edge_blur_std < 0 or self.edge_blur_mean < 0 \
                or self.fov_diameter <= 0 or (np.abs(self.band_corr) > 1).any():
            raise ValueError("nuisance model: spreads must be >= 0, correlations in [-1, 1], the FOV diameter > 0")

    # ---- fitting ---------------------------------------------------------------
    @classmethod
    def fit(cls, images: Iterable[np.ndarray], fovs: Iterable[np.ndarray],
            masks: Iterable[np.ndarray | None] | None = None) -> NuisanceModel:
        """Fit to real RGB images (H, W, 3) uint8 with their FOVs and, if given, vessel masks (an
        entry may be None: its vessels are estimated)."""
        images, fovs = list(images), list(fovs)
        masks = [None] * len(images) if masks is None else list(masks)
        if not images or len(fovs) != len(images) or len(masks) != len(images):
            raise ValueError(f"fit needs one FOV and one mask per image (got {len(images)} images, "
                             f"{len(fovs)} FOVs, {len(masks)} masks)")
        stats = [measure(image, fov, mask) for image, fov, mask in zip(images, fovs, masks)]
        log_energy = np.log(np.maximum(np.stack([s["band_energy"] for s in stats]), 1e-12))
        falloff = np.stack([s["falloff"] for s in stats])
        unevenness = np.stack([s["unevenness"] for s in stats])
        blur = np.array([s["edge_blur"] for s in stats])
        blur = blur[np.isfinite(blur)]
        return cls(log_energy.mean(0), log_energy.std(0), np.mean([s["band_corr"] for s in stats], axis=0),
                   falloff.mean(0), falloff.std(0), unevenness.mean(0), unevenness.std(0),
                   blur.mean() if blur.size else 1.0, blur.std() if blur.size else 0.0,
                   np.mean([s["fov_diameter"] for s in stats]), len(stats))

    @classmethod
    def fit_samples(cls, samples: Iterable) -> NuisanceModel:
        """`fit` on `Sample`s (image, fov, mask), as the readers return them."""
        samples = list(samples)
        return cls.fit([s.image for s in samples], [s.fov for s in samples], [s.mask for s in samples])

    # ---- summaries -------------------------------------------------------------
    @property
    def band_energy(self) -> np.ndarray:
        """(3, 7) typical band energy: the geometric mean over the fitted images."""
        return np.exp(self.log_energy_mean)

    def summary(self) -> dict[str, float]:
        """Flat numbers for a report: band-group energies per channel, fall-off, unevenness, blur."""
        out = {}
        for group, ks in BAND_GROUPS.items():
            for c, name in enumerate(_CHANNELS):
                out[f"{group}/{name}"] = float(self.band_energy[c, list(ks)].sum())
        for c, name in enumerate(_CHANNELS):
            out[f"falloff/{name}"] = float(self.falloff_mean[c])
            out[f"unevenness/{name}"] = float(self.unevenness_mean[c])
        out["edge_blur"] = self.edge_blur_mean
        return out

    # ---- drawing and applying --------------------------------------------------
    def _draw(self, seed: int) -> tuple[dict, np.random.Generator]:
        rng = _seed_rng(seed)
        z = np.clip(rng.standard_normal(len(BAND_GROUPS) + 3), -_Z_CLIP, _Z_CLIP)
        # one z per band group (an image is noisy, or textured, or blotchy as a whole), shared
        # by the channels; one each for the fall-off, the unevenness and the blur
        z_band = np.empty(len(BAND_SIGMAS))
        for g, ks in enumerate(BAND_GROUPS.values()):
            z_band[list(ks)] = z[g]
        target = {
            "band_energy": np.exp(self.log_energy_mean + self.log_energy_std * z_band[None, :]),
            "falloff": self.falloff_mean + self.falloff_std * z[-3],
            "unevenness": np.maximum(self.unevenness_mean + self.unevenness_std * z[-2], 0.0),
            "edge_blur": max(self.edge_blur_mean + self.edge_blur_std * z[-1], 0.0),
        }
        return target, rng

    def draw(self, seed: int) -> dict:
        """The targets `apply` moves an image to for this seed: band_energy (3, 7), falloff (3,),
        unevenness (3,), edge_blur. Each is the real mean plus its spread times a normal draw
        clipped to +-2."""
        return self._draw(seed)[0]

    def apply(self, image: np.ndarray, fov: np.ndarray, seed: int, strength: float = 1.0,
              mask: np.ndarray | None = None) -> np.ndarray:
        """The painted image (H, W, 3), values 0-255, with this seed's nuisances, as uint8.

        1. blur or sharpen it (mildly: at most 0.5 px, or an unsharp amount of 0.5) towards the
           drawn edge blur;
        2. give it the drawn fall-off instead of its own, and a very smooth random field for the
           unevenness it lacks;
        3. multiply it by exp(texture), a random field with, in each band and channel, the energy
           the drawn target has beyond what the painting has already (none where it has more).
        Each channel's mean inside the FOV is kept (colour is `appearance.py`'s business).
        `strength` scales all three (the texture's amplitude; 0 returns the image unchanged).
        `mask`, the painting's vessels, keeps them out of its measurement; without it they are
        estimated. Outside the FOV the result is 0. The same seed gives the same bytes.
        """
        image, geometry = _check(image, fov)
        strength = float(strength)
        if not math.isfinite(strength) or strength < 0:
            raise ValueError(f"strength must be a number >= 0, got {strength}")
        fov8 = geometry.mask.astype(np.uint8)
        if strength == 0:
            return cv2.bitwise_and(image, image, mask=fov8).astype(np.uint8)
        if abs(2.0 * geometry.radius / self.fov_diameter - 1.0) > 0.25:
            warnings.warn(f"nuisance model fitted at a FOV diameter of {self.fov_diameter:.0f} px applied to an "
                          f"image whose FOV is {2.0 * geometry.radius:.0f} px: its band scales are in pixels",
                          stacklevel=2)
        target, rng = self._draw(seed)
        height, width = geometry.mask.shape
        out = image.astype(np.float32)

        # 1. sharpness: Gaussian blurs add in quadrature; an unsharp mask at 1 px with amount a
        #    takes about a px^2 off the blur variance
        current = _edge_blur(_log_image(out[..., 1]), geometry)
        wanted = target["edge_blur"]
        blur = sharpen = 0.0
        if math.isfinite(current):
            if wanted > current:
                blur = min(math.sqrt(wanted**2 - current**2), _MAX_BLUR) * strength
            else:
                sharpen = min(current**2 - wanted**2, _MAX_SHARPEN) * strength
        out = _sharpen_or_blur(out, geometry, blur, sharpen)
        np.clip(out, 0.0, 255.0, out=out)

        # what the painting has now
        log_image = _log_image(out)
        weight = _background_weight(log_image, geometry, mask)
        energies, _, falloff, unevenness = _analyse(log_image, geometry, weight, correlations=False)

        # 2. illumination: the drawn fall-off instead of the painting's, and the missing unevenness
        missing = np.sqrt(np.maximum(target["unevenness"] ** 2 - unevenness**2, 0.0)) * strength
        bump = _unevenness_field(rng, geometry, weight)
        change = (falloff - target["falloff"]) * strength / _falloff_gain(geometry, weight)
        # per channel: change * r^2 + missing * bump, in one pass
        field = cv2.transform(cv2.merge([geometry.radius_squared(), bump.astype(np.float32)]),
                              np.stack([change, missing], axis=1).astype(np.float32))

        # 3. texture: per-band variances whose overlapping bands top the painting up to the target,
        #    in relative terms so that small bands count as much as large ones
        deficit = np.maximum(target["band_energy"] - energies, 0.0)
        leak = _leakage(geometry)
        scale = 1.0 / target["band_energy"]
        variances = np.stack([_nonnegative_least_squares(leak * scale[c][:, None], deficit[c] * scale[c])
                              for c in range(3)]) * strength**2  # (3, 7)
        for k in range(len(BAND_SIGMAS)):  # every band draws, so the RNG stream never depends on the image
            field += _band_noise(rng, k, height, width, _mixing(self.band_corr[k], variances[:, k]))

        # multiply, then restore each channel's mean inside the FOV (gain), undo log1p's +1 and
        # round (+0.5, then truncate) in one pass
        linear = out + 1.0
        result = cv2.multiply(linear, cv2.exp(field))
        gain = np.array(cv2.mean(linear, mask=fov8)[:3]) / np.maximum(np.array(cv2.mean(result, mask=fov8)[:3]), 1e-6)
        affine = np.concatenate([np.diag(gain), np.full((3, 1), -0.5)], axis=1).astype(np.float32)
        result = np.clip(cv2.transform(result, affine), 0.0, 255.0).astype(np.uint8)
        return cv2.bitwise_and(result, result, mask=fov8)

    # ---- persistence -----------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON: floats and lists of floats."""
        return {
            "format": FORMAT,
            "band_sigmas": list(BAND_SIGMAS),
            "channels": list(_CHANNELS),
            "count": self.count,
            "fov_diameter": self.fov_diameter,
            "log_energy_mean": _floats(self.log_energy_mean),
            "log_energy_std": _floats(self.log_energy_std),
            "band_corr": _floats(self.band_corr),
            "falloff_mean": _floats(self.falloff_mean),
            "falloff_std": _floats(self.falloff_std),
            "unevenness_mean": _floats(self.unevenness_mean),
            "unevenness_std": _floats(self.unevenness_std),
            "edge_blur_mean": self.edge_blur_mean,
            "edge_blur_std": self.edge_blur_std,
        }

    @classmethod
    def from_dict(cls, values: dict) -> NuisanceModel:
        """Rebuild from `to_dict`'s output. Data from elsewhere: another format, band layout, shape
        or a non-finite value is refused with a ValueError."""
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            raise ValueError(f"not a nuisance model (expected format {FORMAT!r})")
        if list(values.get("band_sigmas", [])) != list(BAND_SIGMAS):
            raise ValueError(f"nuisance model with bands {values.get('band_sigmas')}; this version uses {list(BAND_SIGMAS)}")
        try:
            return cls(values["log_energy_mean"], values["log_energy_std"], values["band_corr"],
                       values["falloff_mean"], values["falloff_std"], values["unevenness_mean"],
                       values["unevenness_std"], values["edge_blur_mean"], values["edge_blur_std"],
                       values["fov_diameter"], values["count"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"nuisance model: missing or malformed value ({error})") from None
