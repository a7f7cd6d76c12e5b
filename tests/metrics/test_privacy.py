"""Privacy metrics (metrics/privacy.py) on hand-made feature vectors."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from synthmed_lightning.metrics.privacy import (count_near_copies, membership_inference_auc,
                                                membership_inference_interval, near_copy_threshold,
                                                nearest_neighbours, privacy_report, roc_auc)


def _points(n, seed, d=16):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_nearest_neighbours_rms_distance_and_self_exclusion():
    reference = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 10.0]])
    distance, index = nearest_neighbours(np.array([[3.0, 4.5], [0.0, 0.0]]), reference)
    assert index.tolist() == [1, 0] and distance == pytest.approx([0.5 / np.sqrt(2), 0.0])
    distance, index = nearest_neighbours(reference, reference, exclude_self=True)
    assert index.tolist() == [1, 0, 1] and distance[0] == pytest.approx(5 / np.sqrt(2))
    with pytest.raises(ValueError, match="features"):
        nearest_neighbours(np.zeros((2, 3)), np.zeros((2, 4)))


def test_views_make_a_flipped_copy_a_copy():
    image = np.arange(12.0).reshape(3, 4)
    views = np.stack([image.ravel(), image[:, ::-1].ravel()])  # the image and its mirror image
    distance, _ = nearest_neighbours(image[:, ::-1].ravel()[None], image.ravel()[None])
    assert distance[0] > 1
    distance, _ = nearest_neighbours(image[:, ::-1].ravel()[None], views[None])
    assert distance[0] == 0.0
    train = np.stack([views, views + 100.0])  # (2 items, 2 views, 12)
    distance, index = nearest_neighbours(train, train, exclude_self=True)
    assert index.tolist() == [1, 0] and distance[0] == pytest.approx(100.0)


def test_identical_copies_are_flagged_and_fresh_samples_are_not():
    train = _points(20, 0)
    synthetic = np.concatenate([train[:5], _points(15, 1) + 3.0])  # 5 copies, 15 unlike any training point
    threshold = near_copy_threshold(train, percentile=5)
    assert threshold > 0
    distance, index = nearest_neighbours(synthetic, train)
    assert count_near_copies(distance, threshold) == 5 and index[:5].tolist() == list(range(5))
    report = privacy_report(synthetic, train, np.concatenate([train[:1] + 1e-9, _points(19, 2) + 3.0]))
    assert report["near_copies"] == 5 and report["near_copy_fraction"] == 0.25
    assert report["holdout_near_copies"] == 1  # a held-out image (almost) equal to a training image
    assert report["nn_synthetic_to_train"]["min"] == 0.0
    assert report["per_synthetic"]["nearest_train"][:5].tolist() == list(range(5))


def test_mia_auc_is_one_when_the_synthetic_set_is_the_training_set():
    train, holdout = _points(30, 0), _points(30, 1)
    report = privacy_report(train, train, holdout)
    assert report["mia_auc"] == 1.0 and report["near_copies"] == 30
    assert report["synthetic_vs_holdout_median"] == 0.0


def test_mia_auc_is_near_one_half_for_independent_data():
    train, holdout, synthetic = _points(300, 0), _points(300, 1), _points(300, 2)
    report = privacy_report(synthetic, train, holdout)
    assert abs(report["mia_auc"] - 0.5) < 0.06
    assert report["near_copies"] <= 0.1 * len(synthetic)  # about the percentile's share, by construction
    assert 0.9 < report["synthetic_vs_holdout_median"] < 1.1


def test_mia_interval_covers_the_auc_and_narrows_with_more_images():
    rng = np.random.default_rng(0)

    def interval(n):
        members, outsiders = rng.normal(0.0, 1.0, n), rng.normal(0.3, 1.0, n)  # members a little closer
        low, high = membership_inference_interval(members, outsiders, draws=500)
        assert low <= membership_inference_auc(members, outsiders) <= high
        return high - low

    small, large = interval(20), interval(500)
    assert 0.2 < small < 0.5  # DRIVE-sized sets: the AUC is uncertain by about +-0.18
    assert large < small / 3
    assert privacy_report(_points(20, 2), _points(20, 0), _points(20, 1))["mia_auc_ci95"][0] < 0.5


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    positive, negative = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 50).astype(float)
    expected = roc_auc_score(np.r_[np.ones(40), np.zeros(50)], np.r_[positive, negative])
    assert roc_auc(positive, negative) == pytest.approx(expected)
    assert membership_inference_auc([0.1, 0.2], [0.3, 0.4]) == 1.0  # members closer: the attack wins
    assert membership_inference_auc([0.3, 0.4], [0.1, 0.2]) == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="percentile"):
        near_copy_threshold(_points(5, 0), percentile=120)
    with pytest.raises(ValueError, match="non-empty"):
        nearest_neighbours(np.zeros((0, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at least one"):
        roc_auc([], [1.0])
