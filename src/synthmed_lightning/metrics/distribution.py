"""How close a synthetic image set is to a real one, as distributions.

Two numbers, because neither is enough alone (docs/design.md, "what the paper leaves open"):

* `intensity_kl`: the paper's measure. Per-channel 256-bin intensity histograms inside the FOV,
  pooled over a dataset, add-one smoothed, KL(real || other) summed over the channels. It sees
  colour and brightness, not structure: shuffled pixels score as well as a real image.
* `frechet_distance` of feature vectors (Heusel et al. 2017's FID formula), here fed with the
  pooled encoder features of the trained U-Net on image tiles (`UNet.encode`, computed by the
  study), so it needs no download: it sees vessel-scale structure.
"""

from collections.abc import Iterable

import numpy as np

_BINS = 256


def intensity_histograms(images: Iterable[np.ndarray], fovs: Iterable[np.ndarray]) -> np.ndarray:
    """(C, 256) pixel counts of uint8 (H, W, C) images, inside their {0, 1} (H, W) FOVs, pooled."""
    total = None
    for image, fov in zip(images, fovs):
        if image.dtype != np.uint8:
            raise ValueError(f"intensity_histograms expects uint8 images, got {image.dtype}")
        pixels = image[np.asarray(fov, bool)]  # (N, C)
        counts = np.stack([np.bincount(pixels[:, c], minlength=_BINS) for c in range(pixels.shape[1])])
        total = counts if total is None else total + counts
    if total is None:
        raise ValueError("intensity_histograms needs at least one image")
    return total.astype(np.float64)


def histogram_kl(real_counts: np.ndarray, other_counts: np.ndarray) -> float:
    """KL(real || other) in nats of (C, bins) count arrays: add-one smoothing, summed over C."""
    if real_counts.shape != other_counts.shape:
        raise ValueError(f"histogram shapes differ: {real_counts.shape} vs {other_counts.shape}")
    p = real_counts + 1.0
    q = other_counts + 1.0
    p /= p.sum(axis=-1, keepdims=True)
    q /= q.sum(axis=-1, keepdims=True)
    return float(np.sum(p * np.log(p / q)))


def intensity_kl(real: tuple[list, list], other: tuple[list, list]) -> float:
    """KL(real || other) of two datasets, each given as (uint8 RGB images, FOVs)."""
    return histogram_kl(intensity_histograms(*real), intensity_histograms(*other))


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to two (N, D) feature sets:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2).

    The symmetric form of the matrix square root keeps it real without scipy. It is biased
    upwards for small N, so compare sets of the same size only.
    """
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance needs two (N>=2, D) arrays of the same D, got {a.shape} and {b.shape}")
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)
    value = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross)
    return float(max(value, 0.0))
