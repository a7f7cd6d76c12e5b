"""How close a synthetic image set is to a real one, as distributions.

Two numbers, because neither is enough alone (docs/design.md, "what the paper leaves open"):

* `intensity_kl`: the paper's measure. Per-channel 256-bin intensity histograms inside the FOV,
  pooled over a dataset, add-one smoothed, KL(real || other) summed over the channels. It sees
  colour and brightness, not structure: shuffled pixels score as well as a real image.
* `frechet_distance` of feature vectors (Heusel et al. 2017's FID formula), here fed with the
  pooled encoder features of the trained U-Net on image tiles (`UNet.encode`, computed by the
  study), so it needs no download: it sees vessel-scale structure. `kernel_distance` (KID,
  Binkowski et al. 2018) on the same features is unbiased, so it stays comparable at small N.

Both are torchmetrics' FrechetInceptionDistance and KernelInceptionDistance, given a pass-through
feature extractor: the features are computed beforehand, once for both measures.
"""

import warnings
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

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


class _Precomputed(nn.Module):
    """The `feature` network torchmetrics' FID and KID call: the identity on (N, D) features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features  # read by FID instead of probing with a dummy image

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _feature_pair(name: str, features_a: np.ndarray, features_b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    # float64: FID casts its result back to the features' dtype, and KID computes in it.
    a = torch.as_tensor(np.asarray(features_a, np.float64))
    b = torch.as_tensor(np.asarray(features_b, np.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"{name} needs two (N>=2, D) arrays of the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a, b


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to two (N, D) feature sets:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2).

    It is biased upwards for small N, so compare sets of the same size only (or use `kernel_distance`).
    """
    a, b = _feature_pair("frechet_distance", features_a, features_b)
    metric = FrechetInceptionDistance(feature=_Precomputed(a.shape[1]))
    metric.update(a, real=True)
    metric.update(b, real=False)
    # Identical sets give a round-off value of either sign; a distance is not negative.
    return max(float(metric.compute()), 0.0)


def kernel_distance(features_a: np.ndarray, features_b: np.ndarray, subset_size: int = 1000,
                    subsets: int = 100, seed: int = 0) -> float:
    """Kernel Inception Distance (KID) of two (N, D) feature sets: the unbiased squared MMD with the
    cubic polynomial kernel (x.y / D + 1)^3, averaged over `subsets` random subsets of
    min(`subset_size`, smallest N) features from each set. Unbiased, so it can be slightly negative
    for sets from one distribution; the subsets are drawn from `seed`, not the global RNG.
    """
    a, b = _feature_pair("kernel_distance", features_a, features_b)
    size = min(subset_size, len(a), len(b))
    if size == len(a) == len(b):
        subsets = 1  # every subset would be both whole sets: the same value each time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "saves all features in a buffer": ours are in memory already
        metric = KernelInceptionDistance(feature=_Precomputed(a.shape[1]), subsets=subsets, subset_size=size)
    metric.update(a, real=True)
    metric.update(b, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, _ = metric.compute()
    return float(mean)
