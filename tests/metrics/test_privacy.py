"""Privacy metrics (metrics/privacy.py) on hand-made feature vectors."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from synthmed_lightning.metrics.privacy import (auc_interval, calibrated_scores, control_detection,
                                                count_near_copies, membership_inference_auc,
                                                membership_inference_interval, near_copy_threshold,
                                                nearest_neighbours, negative_control, privacy_report, raw_scores,
                                                repeated_split_attack, roc_auc, tpr_at_fpr)


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
    report = privacy_report(synthetic, train, np.concatenate([train[:1] + 1e-9, _points(19, 2) + 3.0]), draws=200)
    assert report["near_copies"] == 5 and report["near_copy_fraction"] == 0.25
    assert report["holdout_near_copies"] == 1  # a held-out image (almost) equal to a training image
    assert report["nn_synthetic_to_train"]["min"] == 0.0
    assert report["per_synthetic"]["nearest_train"][:5].tolist() == list(range(5))


def test_mia_auc_is_one_when_the_synthetic_set_is_the_training_set():
    train, holdout = _points(30, 0), _points(30, 1)
    report = privacy_report(train, train, holdout, draws=200)
    assert report["mia_auc"] == 1.0 and report["near_copies"] == 30
    assert report["calibrated"]["auc"] == 1.0 and report["calibrated"]["auc_ci95"] == [1.0, 1.0]
    assert report["calibrated"]["tpr_at_fpr"] == {"1%": 1.0, "10%": 1.0}
    assert report["synthetic_vs_holdout_median"] == 0.0


def test_mia_auc_is_near_one_half_for_independent_data():
    train, holdout, synthetic = _points(300, 0), _points(300, 1), _points(300, 2)
    report = privacy_report(synthetic, train, holdout, draws=200)
    assert abs(report["mia_auc"] - 0.5) < 0.06 and abs(report["calibrated"]["auc"] - 0.5) < 0.06
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


def test_calibration_ranks_an_atypical_members_copy_above_a_typical_outsider():
    """Raw distance mostly measures typicality: a typical held-out image sits closer to generic
    synthetic samples than an atypical member does to its (imperfect) copy. Relative to each image's
    nearest fellow real image, the copy stands out and the typical outsider does not."""
    typical_members = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]])
    typical_outsider = np.array([[0.1, 0.1]])
    atypical_member = np.array([[10.0, 0.0]])
    synthetic = np.array([[0.1, 0.15], [10.5, 0.0]])  # a generic sample; the atypical member's rough copy
    real = np.concatenate([typical_members, atypical_member, typical_outsider])
    to_synthetic, _ = nearest_neighbours(real, synthetic)
    to_real, _ = nearest_neighbours(real, real, exclude_self=True)
    raw, calibrated = raw_scores(to_synthetic), calibrated_scores(to_synthetic, to_real)
    outsider, member = 4, 3
    assert raw[outsider] > raw[member]                 # the raw attack takes the outsider for the member
    assert calibrated[member] > calibrated[outsider]   # the calibrated one does not
    assert calibrated[member] == pytest.approx(np.log(9.9 / 0.5))  # its nearest fellow: (0.1, 0)
    assert calibrated[outsider] == pytest.approx(np.log(0.1 / 0.05))
    report = privacy_report(synthetic, real[:4], real[4:], draws=200)
    assert report["per_real"]["member"].tolist() == [True] * 4 + [False]
    assert report["per_real"]["calibrated"] == pytest.approx(calibrated)
    assert np.argmax(report["per_real"]["raw"]) == outsider and np.argmax(report["per_real"]["calibrated"]) == member
    assert report["calibrated"]["auc_ci95"] == [0.0, 1.0]  # one held-out image: an interval says nothing
    assert calibrated_scores([0.0], [1.0])[0] > 700  # an exact copy: very high, finite


def test_tpr_at_low_false_positive_rates():
    members, outsiders = np.arange(10.0, 20.0), np.arange(0.0, 10.0) + 5.5  # outsiders 5.5 .. 14.5
    rates = tpr_at_fpr(members, outsiders)
    assert rates == {"1%": 0.5, "10%": 0.6}  # above all outsiders: 15..19; above all but one: 14 too
    assert tpr_at_fpr([3.0], [1.0, 2.0]) == {"1%": 1.0, "10%": 1.0}
    low, high = auc_interval(members, outsiders, draws=300)
    assert low <= roc_auc(members, outsiders) <= high < 1.0


def test_negative_control_and_control_detection():
    rng = np.random.default_rng(5)
    train, holdout = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    negative = negative_control(train, holdout, draws=300)
    assert negative["stand_in_count"] == 20 and negative["holdout_count"] == 20
    low, high = negative["calibrated"]["auc_ci95"]
    assert low < 0.5 < high  # a set without members reads as no leak
    synthetic = rng.normal(size=(100, 8))
    planted = np.arange(20)
    synthetic[planted] = train[np.arange(20) % 40] + rng.normal(scale=0.01, size=(20, 8))  # 20 near copies
    found = control_detection(privacy_report(synthetic, train, holdout, draws=300), planted, negative["calibrated"]["auc"])
    assert found == {"planted": 20, "planted_flagged": 20, "near_copies_found": True, "auc_above_negative": True,
                     "detected": True}
    clean = control_detection(privacy_report(rng.normal(size=(100, 8)), train, holdout, draws=300), planted,
                              negative["calibrated"]["auc"])
    assert not clean["auc_above_negative"]


def _split_scores(effect: float, images: int = 40, runs: int = 8, seed: int = 0):
    """(scores, members) of images whose typicality varies much more than a member's advantage `effect`."""
    rng = np.random.default_rng(seed)
    members = np.zeros((images, runs), dtype=bool)
    for pair in range(runs // 2):  # complementary halves: each image in exactly half the runs
        half = rng.permutation(images)[: images // 2]
        members[half, 2 * pair] = True
        members[:, 2 * pair + 1] = ~members[:, 2 * pair]
    typicality = rng.normal(0.0, 1.0, (images, 1))
    return typicality + effect * members + rng.normal(0.0, 0.1, (images, runs)), members


def test_repeated_splits_compare_each_image_with_itself():
    scores, members = _split_scores(effect=0.3)
    result = repeated_split_attack(scores, members, draws=200)
    assert result["images"] == 40 and result["runs"] == 8
    assert result["pooled"]["auc"] < 0.7            # drowned by how typical each image is
    assert result["self"]["auc"] > 0.95 and result["self"]["auc_ci95"][0] > 0.9
    assert result["gap"]["mean"] == pytest.approx(0.3, abs=0.05) and result["gap"]["ci95"][0] > 0.2
    assert result["gap"]["share_positive"] > 0.9
    null = repeated_split_attack(*_split_scores(effect=0.0), draws=200)
    assert null["self"]["auc_ci95"][0] < 0.5 < null["self"]["auc_ci95"][1]
    assert null["gap"]["ci95"][0] < 0.0 < null["gap"]["ci95"][1]
    with pytest.raises(ValueError, match="out of at least two"):
        repeated_split_attack(scores[:, :2], members[:, :2])
