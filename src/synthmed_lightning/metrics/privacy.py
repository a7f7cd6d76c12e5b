"""Privacy metrics of a synthetic set against the real images its generators learned from.

A synthetic set leaks when it holds copies (or near copies) of training images, or when being in
the training set makes a real image measurably closer to the synthetic set than a comparable image
that was not. All functions work on feature vectors (one row per image, or one per view of an
image such as its flips) in any space: pixels of a downsampled image inside its FOV, or a
network's features; distances are root-mean-square Euclidean (the L2 distance divided by
sqrt(dimension)), so their scale does not depend on the feature size.

- `nearest_neighbours`: each query's nearest reference and its distance (optionally leaving out the
  query itself when both sets are the same).
- `near_copy_threshold`: a distance calibrated on real data: the `percentile`-th percentile of
  the training images' leave-one-out nearest-neighbour distances. Two different real patients'
  images are rarely this close, so a synthetic image this close to a training image is a near copy.
- `membership_inference_auc`: a distance attack (in the spirit of Hilprecht et al. 2019 and
  Chen et al. 2020, GAN-leaks): score every real image by its distance to the nearest synthetic
  image, and measure with the ROC AUC how well that score tells training images (members) from
  held-out ones. 0.5: no leak; 1.0: every training image is closer than every held-out image.
- `membership_inference_interval`: a bootstrap 95 % interval of that AUC. With DRIVE's 20 training
  and 20 test images it spans about +-0.18, so one AUC alone says little.
"""

from __future__ import annotations

import numpy as np
import torch

_CHUNK = 1024


def _as_views(x) -> torch.Tensor:
    """(n, d) or (n, views, d) -> float64 (n, views, d)."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float64)
    if x.dim() == 2:
        x = x[:, None]
    if x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"expected non-empty feature vectors, (n, d) or (n, views, d), got shape {tuple(x.shape)}")
    return x


def nearest_neighbours(query, reference, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query item's nearest reference item, RMS Euclidean.

    Items are rows of (n, d), or (n, views, d) for several views of one image (e.g. its flips):
    two items are as far apart as their closest pair of views, so a flipped copy is still a copy.
    `exclude_self=True` (query and reference the same set): an item is not its own neighbour.
    """
    q, r = _as_views(query), _as_views(reference)
    if q.shape[2] != r.shape[2]:
        raise ValueError(f"query has {q.shape[2]} features, reference {r.shape[2]}")
    if exclude_self and (q.shape[0] != r.shape[0] or r.shape[0] < 2):
        raise ValueError("exclude_self needs the same set of at least two items as query and reference")
    n, m, dim = q.shape[0], r.shape[0], q.shape[2]
    flat_reference = r.reshape(-1, dim)
    distances, indices = [], []
    for start in range(0, n, _CHUNK):
        chunk = q[start: start + _CHUNK]
        d = torch.cdist(chunk.reshape(-1, dim), flat_reference).reshape(chunk.shape[0], chunk.shape[1], m, r.shape[1])
        d = d.amin(dim=(1, 3))
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = float("inf")
        best = d.min(dim=1)
        distances.append(best.values)
        indices.append(best.indices)
    return (torch.cat(distances) / float(dim) ** 0.5).numpy(), torch.cat(indices).numpy()


def near_copy_threshold(train, percentile: float = 5.0) -> float:
    """The `percentile`-th percentile of the training set's leave-one-out nearest-neighbour distances."""
    _check_percentile(percentile)
    distances, _ = nearest_neighbours(train, train, exclude_self=True)
    return float(np.percentile(distances, percentile))


def _check_percentile(percentile: float) -> float:
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile={percentile}: must be in [0, 100]")
    return float(percentile)


def count_near_copies(distances, threshold: float) -> int:
    """Synthetic images at most `threshold` from their nearest training image (exact copies included)."""
    return int(np.count_nonzero(np.asarray(distances) <= threshold))


def roc_auc(positive_scores, negative_scores) -> float:
    """P(a positive scores higher than a negative), ties counting one half (Mann-Whitney U / n+ n-)."""
    pos = np.asarray(positive_scores, dtype=np.float64)
    neg = np.asarray(negative_scores, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("roc_auc needs at least one positive and one negative score")
    ranks = _average_ranks(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(1, values.size + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def membership_inference_auc(train_to_synthetic, holdout_to_synthetic) -> float:
    """AUC of the attack "closer to the synthetic set means member": inputs are each real image's distance
    to its nearest synthetic image, for training images (members) and held-out images."""
    return roc_auc(-np.asarray(train_to_synthetic, dtype=np.float64), -np.asarray(holdout_to_synthetic, dtype=np.float64))


def membership_inference_interval(train_to_synthetic, holdout_to_synthetic, draws: int = 2000,
                                  seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95 % interval of `membership_inference_auc`: members and held-out images resampled
    with replacement, each group on its own (a stratified bootstrap), `draws` times."""
    members = -np.asarray(train_to_synthetic, dtype=np.float64)
    outsiders = -np.asarray(holdout_to_synthetic, dtype=np.float64)
    rng = np.random.default_rng(seed)
    aucs = [roc_auc(rng.choice(members, members.size), rng.choice(outsiders, outsiders.size)) for _ in range(draws)]
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def distance_summary(distances) -> dict[str, float]:
    d = np.asarray(distances, dtype=np.float64)
    return {"min": float(d.min()), "p05": float(np.percentile(d, 5)), "median": float(np.median(d)),
            "mean": float(d.mean()), "max": float(d.max())}


def privacy_report(synthetic, train, holdout, percentile: float = 5.0) -> dict:
    """Everything the audit reports for one feature space (items: (n, d) or (n, views, d), see `nearest_neighbours`).

    nn_synthetic_to_train / nn_train_to_train (leave-one-out) / nn_holdout_to_train: distance summaries;
    the synthetic set should sit no closer to the training images than held-out real images do
    (`synthetic_vs_holdout_median` < 1 says closer). near_copy_threshold, near_copies (count) and
    near_copy_fraction; holdout_near_copies (held-out real images under the threshold: the false-alarm
    count to read near_copies against); mia_auc and its bootstrap interval mia_auc_ci95. Also the
    per-synthetic-image nearest training index and distance.
    """
    _check_percentile(percentile)
    syn_d, syn_i = nearest_neighbours(synthetic, train)
    train_d, _ = nearest_neighbours(train, train, exclude_self=True)
    holdout_d, _ = nearest_neighbours(holdout, train)
    threshold = float(np.percentile(train_d, percentile))
    member_d, _ = nearest_neighbours(train, synthetic)
    outsider_d, _ = nearest_neighbours(holdout, synthetic)
    copies = count_near_copies(syn_d, threshold)
    return {
        "nn_synthetic_to_train": distance_summary(syn_d),
        "nn_train_to_train": distance_summary(train_d),
        "nn_holdout_to_train": distance_summary(holdout_d),
        "synthetic_vs_holdout_median": float(np.median(syn_d) / max(np.median(holdout_d), 1e-12)),
        "near_copy_percentile": float(percentile),
        "near_copy_threshold": threshold,
        "near_copies": copies,
        "near_copy_fraction": copies / len(syn_d),
        # The same test on held-out real images: how often a fresh patient is "a near copy" (false alarms).
        "holdout_near_copies": count_near_copies(holdout_d, threshold),
        "mia_auc": membership_inference_auc(member_d, outsider_d),
        "mia_auc_ci95": list(membership_inference_interval(member_d, outsider_d)),
        "per_synthetic": {"distance": syn_d, "nearest_train": syn_i},
    }
