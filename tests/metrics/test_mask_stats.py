"""Hand-made cases for the mode-collapse / copying statistics of binary masks."""

import numpy as np
import pytest
import torch

from synthmed_lightning.metrics.mask_stats import (
    connected_components,
    iou_matrix,
    leave_one_out_copy_iou,
    mask_statistics,
    mean_pairwise_iou,
    nearest_copy_iou,
    vessel_fraction,
)


def _rect(h, w, top, left, bottom, right):
    m = np.zeros((h, w), dtype=bool)
    m[top:bottom, left:right] = True
    return m


def _asymmetric(h=16, w=16):
    """An L shape: differs from each of its flips."""
    m = np.zeros((h, w), dtype=bool)
    m[2:12, 3] = True
    m[11, 3:10] = True
    return m


def _brute_iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def test_pairwise_iou_identical_masks_is_one():
    m = _asymmetric()
    assert mean_pairwise_iou(np.stack([m, m, m])) == 1.0


def test_pairwise_iou_disjoint_masks_is_zero():
    a = _rect(8, 8, 0, 0, 4, 4)
    b = _rect(8, 8, 4, 4, 8, 8)
    assert mean_pairwise_iou(np.stack([a, b])) == 0.0


def test_pairwise_iou_known_partial_overlap():
    a = _rect(8, 8, 0, 0, 4, 4)  # 16 px
    b = _rect(8, 8, 0, 2, 4, 6)  # 16 px, 8 shared -> IoU 8 / 24
    c = _rect(8, 8, 4, 0, 8, 8)  # disjoint from both
    assert mean_pairwise_iou(np.stack([a, b])) == pytest.approx(1 / 3)
    assert mean_pairwise_iou(np.stack([a, b, c])) == pytest.approx((1 / 3 + 0 + 0) / 3)


def test_pairwise_iou_matches_brute_force_and_accepts_torch():
    rng = np.random.default_rng(0)
    masks = rng.random((6, 20, 24)) < 0.3
    expected = np.mean([_brute_iou(masks[i], masks[j]) for i in range(6) for j in range(i + 1, 6)])
    assert mean_pairwise_iou(masks) == pytest.approx(expected)
    assert mean_pairwise_iou(torch.from_numpy(masks).float()[:, None]) == pytest.approx(expected)


def test_iou_of_two_empty_masks_is_one_and_single_mask_is_nan():
    empty = np.zeros((2, 4, 4), dtype=bool)
    assert iou_matrix(empty, empty)[0, 1] == 1.0
    assert np.isnan(mean_pairwise_iou(empty[:1]))


def test_flipped_copy_found_only_with_flips():
    ref = _asymmetric()
    other = _rect(16, 16, 0, 12, 4, 16)
    references = np.stack([ref, other])
    samples = np.stack([ref[:, ::-1], ref[::-1, :], ref[::-1, ::-1]])
    assert np.allclose(nearest_copy_iou(samples, references, flips=True), 1.0)
    assert np.all(nearest_copy_iou(samples, references, flips=False) < 1.0)


def test_nearest_copy_iou_resizes_references_nearest():
    small = _rect(8, 8, 2, 2, 6, 4)
    big = np.kron(small, np.ones((2, 2), dtype=bool))  # the same mask at 16x16
    assert nearest_copy_iou(big[None], small[None], flips=False) == pytest.approx([1.0])
    assert nearest_copy_iou(small[None], big[None], flips=False) == pytest.approx([1.0])


def test_nearest_copy_iou_values():
    refs = np.stack([_rect(8, 8, 0, 0, 4, 4), _rect(8, 8, 4, 4, 8, 8)])
    samples = np.stack([_rect(8, 8, 0, 2, 4, 6), _rect(8, 8, 4, 4, 8, 8)])
    # sample 0 overlaps ref 0 by 8 of 24 px; sample 1 is ref 1
    np.testing.assert_allclose(nearest_copy_iou(samples, refs, flips=False), [1 / 3, 1.0])


def test_leave_one_out_excludes_self_and_own_flips():
    a = _asymmetric()
    b = _rect(16, 16, 0, 0, 2, 2)
    c = a[:, ::-1]  # a flipped copy of a
    loo = leave_one_out_copy_iou(np.stack([a, b, c]), flips=True)
    assert loo[0] == pytest.approx(1.0) and loo[2] == pytest.approx(1.0)
    assert loo[1] < 1.0  # b only matches itself
    loo_single_pair = leave_one_out_copy_iou(np.stack([a, b]), flips=True)
    assert np.all(loo_single_pair < 1.0)


def test_connected_components_three_blobs():
    m = np.zeros((16, 16), dtype=np.uint8)
    m[1:3, 1:3] = 1
    m[8:10, 8:12] = 1
    m[13:15, 2:4] = 1
    assert connected_components(m[None]) == 3.0
    diag = np.eye(6, dtype=bool)  # diagonal pixels touch only with 8-connectivity
    empty = np.zeros((6, 6), dtype=bool)
    assert connected_components(np.stack([diag, empty])) == pytest.approx(0.5)


def test_vessel_fraction_with_fov():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0, :] = True  # 4 vessel px, 2 of them inside the FOV
    masks[1, 1:3, 1:3] = True  # 4 vessel px, all inside the FOV
    fov = np.zeros((4, 4), dtype=bool)
    fov[:, 1:3] = True  # 8 FOV px
    assert vessel_fraction(masks) == pytest.approx((4 / 16 + 4 / 16) / 2)
    assert vessel_fraction(masks, fov) == pytest.approx((2 / 8 + 4 / 8) / 2)
    per_mask_fov = np.stack([fov, np.ones((4, 4), dtype=bool)])
    assert vessel_fraction(masks, per_mask_fov) == pytest.approx((2 / 8 + 4 / 16) / 2)
    with pytest.raises(ValueError, match="empty"):
        vessel_fraction(masks, np.zeros((4, 4)))


def test_mask_statistics_keys_and_values():
    refs = np.stack([_asymmetric(), _rect(16, 16, 0, 0, 4, 4), _rect(16, 16, 8, 8, 16, 16)])
    samples = np.stack([_asymmetric()[:, ::-1], _rect(32, 32, 0, 0, 8, 8)[::2, ::2]])
    fov = np.ones((32, 32), dtype=bool)  # resized to the masks' 16x16
    stats = mask_statistics(torch.from_numpy(samples), refs, fov=fov, prefix="val/")
    assert set(stats) == {
        f"val/{k}"
        for k in (
            "vessel_fraction",
            "real_vessel_fraction",
            "pairwise_iou",
            "real_pairwise_iou",
            "copy_iou_max",
            "copy_iou_mean",
            "real_copy_iou_max",
            "components",
            "real_components",
        )
    }
    assert all(isinstance(v, float) for v in stats.values())
    assert stats["val/copy_iou_max"] == 1.0  # flipped copy of refs[0]
    assert stats["val/copy_iou_mean"] == 1.0  # samples[1] is refs[1]
    assert stats["val/real_copy_iou_max"] < 1.0
    assert stats["val/components"] == 1.0 and stats["val/real_components"] == 1.0
    assert stats["val/pairwise_iou"] == 0.0
    assert stats["val/vessel_fraction"] == pytest.approx((samples.sum((1, 2)) / 256).mean())


def test_mask_statistics_per_reference_fov_uses_majority_for_samples():
    refs = np.ones((3, 4, 4), dtype=bool)
    samples = np.zeros((2, 4, 4), dtype=bool)
    samples[:, 0] = True  # one row of vessels
    fovs = np.zeros((3, 4, 4), dtype=bool)
    fovs[:2, :2] = True  # two references see rows 0-1 ...
    fovs[2] = True  # ... one sees everything: the majority FOV is rows 0-1
    stats = mask_statistics(samples, refs, fov=fovs)
    assert stats["vessel_fraction"] == pytest.approx(4 / 8)
    assert stats["real_vessel_fraction"] == 1.0
    with pytest.raises(ValueError, match="3 FOV masks for 2 reference"):
        mask_statistics(samples, refs[:2], fov=fovs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="shaped"):
        mean_pairwise_iou(np.zeros((2, 3, 4, 4)))
