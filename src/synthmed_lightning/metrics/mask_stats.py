"""Statistics of binary vessel masks, to spot mode collapse and memorisation.

A GAN trained on ~20 masks (DRIVE) can fail in two quiet ways that FID-like
scores on so few images miss:

* mode collapse: samples look alike -> high mean pairwise IoU between samples
  (compare with the same measure on the real masks);
* copying: samples reproduce a training mask, perhaps flipped -> nearest-copy
  IoU near 1 (compare with each real mask's nearest *other* real mask).

Vessel fraction and the number of connected components are cheap checks of
vessel density and fragmentation.

Inputs may be numpy arrays or torch tensors, bool or 0/1, shaped (N, H, W);
(N, 1, H, W) and a single (H, W) mask are also accepted. Numeric values are
thresholded at 0.5 (so 0/255 works too); threshold tanh outputs in [-1, 1] at
0 yourself first. A FOV is (H, W) or (N, H, W).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def as_bool_masks(masks) -> np.ndarray:
    """Return masks as a bool numpy array (N, H, W)."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    arr = np.asarray(masks)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"masks must be shaped (N, H, W) or (N, 1, H, W), got {arr.shape}")
    if len(arr) == 0:
        raise ValueError("got an empty set of masks")
    return arr if arr.dtype == bool else arr > 0.5


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of bool masks (N, H, W) to (height, width); keeps them binary."""
    if masks.shape[1:] == tuple(size):
        return masks
    h, w = size
    out = [cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) for m in masks]
    return np.stack(out).astype(bool)


def _flat(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, H*W) float32: exact for counts below 2**24 pixels."""
    return masks.reshape(len(masks), -1).astype(np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every mask in a (N, H, W) with every mask in b (M, H, W), as (N, M) float64.

    One matrix product gives all intersections; unions follow from the areas.
    Two empty masks are identical, so their IoU is 1.
    """
    fa, fb = _flat(a), _flat(b)
    inter = (fa @ fb.T).astype(np.float64)
    union = fa.sum(1, dtype=np.float64)[:, None] + fb.sum(1, dtype=np.float64)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 1.0)


def _flip_augment(masks: np.ndarray) -> np.ndarray:
    """Masks followed by their horizontal, vertical and double flips: (4N, H, W)."""
    return np.concatenate([masks, masks[:, :, ::-1], masks[:, ::-1, :], masks[:, ::-1, ::-1]])


def _fov_for(fov, masks: np.ndarray) -> np.ndarray:
    """FOV as bool (N, H, W) matching the masks; resized (nearest) if its size differs."""
    if fov is None:
        return np.ones_like(masks)
    fov = as_bool_masks(fov)
    fov = resize_masks(fov, masks.shape[1:])
    if len(fov) == 1:
        return np.broadcast_to(fov, masks.shape)
    if len(fov) != len(masks):
        raise ValueError(f"got {len(fov)} FOV masks for {len(masks)} masks")
    return fov


def vessel_fraction(masks, fov=None) -> float:
    """Mean over masks of (vessel pixels inside the FOV) / (FOV pixels).

    Without a FOV the whole image counts. A FOV of a different size is resized
    to the masks' size with nearest neighbour.
    """
    masks = as_bool_masks(masks)
    fov = _fov_for(fov, masks)
    area = fov.reshape(len(masks), -1).sum(1)
    if np.any(area == 0):
        raise ValueError("the FOV is empty for at least one mask")
    vessels = (masks & fov).reshape(len(masks), -1).sum(1)
    return float(np.mean(vessels / area))


def mean_pairwise_iou(masks) -> float:
    """Mean IoU over all unordered pairs i < j: 1.0 for identical masks, low for diverse ones.

    Returns nan for fewer than two masks (no pairs).
    """
    masks = as_bool_masks(masks)
    if len(masks) < 2:
        return float("nan")
    iou = iou_matrix(masks, masks)
    i, j = np.triu_indices(len(masks), k=1)
    return float(iou[i, j].mean())


def nearest_copy_iou(samples, references, flips: bool = True) -> np.ndarray:
    """For each sample, the highest IoU with any reference mask: shape (N_samples,).

    References are first resized to the samples' size (nearest neighbour, so
    they stay binary); with ``flips`` their horizontal, vertical and double
    flips count as references too, because training used flip augmentation and
    a flipped copy is still a copy.
    """
    samples = as_bool_masks(samples)
    refs = resize_masks(as_bool_masks(references), samples.shape[1:])
    if flips:
        refs = _flip_augment(refs)
    return iou_matrix(samples, refs).max(axis=1)


def leave_one_out_copy_iou(references, flips: bool = True) -> np.ndarray:
    """For each real mask, the highest IoU with any *other* real mask (and its flips).

    This calibrates ``nearest_copy_iou``: samples should be no closer to the
    training set than real masks are to each other. nan for a single mask.
    """
    refs = as_bool_masks(references)
    n = len(refs)
    if n < 2:
        return np.full(n, np.nan)
    candidates = _flip_augment(refs) if flips else refs
    iou = iou_matrix(refs, candidates)  # (n, k*n): column c is a variant of mask c % n
    owner = np.arange(iou.shape[1]) % n
    iou[owner[None, :] == np.arange(n)[:, None]] = -np.inf
    return iou.max(axis=1)


def connected_components(masks) -> float:
    """Mean number of 8-connected vessel components per mask (background not counted).

    A healthy vessel tree is a few large components; many means fragmented output.
    """
    masks = as_bool_masks(masks)
    counts = [cv2.connectedComponents(m.astype(np.uint8), connectivity=8)[0] - 1 for m in masks]
    return float(np.mean(counts))


def _sample_fov(fov, n_references: int):
    """FOV for generated samples: a per-reference FOV stack becomes its pixelwise majority."""
    if fov is None:
        return None
    fov = as_bool_masks(fov)
    if len(fov) == 1:
        return fov
    if len(fov) != n_references:
        raise ValueError(f"got {len(fov)} FOV masks for {n_references} reference masks")
    return fov.mean(axis=0) >= 0.5


def mask_statistics(samples, references, fov=None, prefix: str = "") -> dict[str, float]:
    """All statistics for generated ``samples`` and real ``references``, as one flat dict.

    ``fov`` is (H, W), shared by both sets, or (N_references, H, W), one per real
    mask, in which case samples use the pixelwise majority of those FOVs. Keys
    (each prefixed by ``prefix``): vessel_fraction, real_vessel_fraction,
    pairwise_iou, real_pairwise_iou, copy_iou_max, copy_iou_mean,
    real_copy_iou_max, components, real_components.
    """
    samples = as_bool_masks(samples)
    references = as_bool_masks(references)
    copy_iou = nearest_copy_iou(samples, references, flips=True)
    stats = {
        "vessel_fraction": vessel_fraction(samples, _sample_fov(fov, len(references))),
        "real_vessel_fraction": vessel_fraction(references, fov),
        "pairwise_iou": mean_pairwise_iou(samples),
        "real_pairwise_iou": mean_pairwise_iou(references),
        "copy_iou_max": float(copy_iou.max()),
        "copy_iou_mean": float(copy_iou.mean()),
        "real_copy_iou_max": float(np.max(leave_one_out_copy_iou(references, flips=True))),
        "components": connected_components(samples),
        "real_components": connected_components(references),
    }
    return {f"{prefix}{key}": value for key, value in stats.items()}
