"""FOV-aware segmentation metrics against scikit-learn on fixed arrays."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

from synthmed_lightning.metrics.segmentation import VesselSegmentationMetrics


def _arrays(seed=0, shape=(2, 1, 40, 50)):
    rng = np.random.default_rng(seed)
    target = rng.random(shape) < 0.15
    probs = np.clip(target * 0.6 + rng.random(shape) * 0.6 - 0.1, 0, 1)
    fov = np.zeros(shape, bool)
    fov[..., 5:35, 5:45] = True
    return probs.astype(np.float32), target, fov


def test_matches_sklearn_inside_the_fov():
    probs, target, fov = _arrays()
    metric = VesselSegmentationMetrics()
    # Two updates, as two images of a test set would come.
    for i in range(2):
        metric.update(torch.from_numpy(probs[i]), torch.from_numpy(target[i]), torch.from_numpy(fov[i]))
    got = {k: float(v) for k, v in metric.compute().items()}

    p, t = probs[fov], target[fov]
    pred = p >= 0.5
    assert got["f1_vessel"] == pytest.approx(f1_score(t, pred), abs=1e-6)
    assert got["f1_macro"] == pytest.approx(f1_score(t, pred, average="macro"), abs=1e-6)
    assert got["auc"] == pytest.approx(roc_auc_score(t, p), abs=1e-5)
    assert got["accuracy"] == pytest.approx(accuracy_score(t, pred), abs=1e-6)
    assert got["sensitivity"] == pytest.approx(recall_score(t, pred), abs=1e-6)
    assert got["specificity"] == pytest.approx(recall_score(~t, ~pred), abs=1e-6)


def test_pixels_outside_the_fov_do_not_count():
    probs, target, fov = _arrays(1)
    inside = VesselSegmentationMetrics()
    inside.update(torch.from_numpy(probs), torch.from_numpy(target), torch.from_numpy(fov))
    spoiled = probs.copy()
    spoiled[~fov] = 1 - spoiled[~fov]  # wrong everywhere outside the FOV
    outside = VesselSegmentationMetrics()
    outside.update(torch.from_numpy(spoiled), torch.from_numpy(target), torch.from_numpy(fov))
    assert inside.compute()["f1_vessel"] == outside.compute()["f1_vessel"]


def test_perfect_prediction_scores_one():
    _, target, fov = _arrays(2)
    metric = VesselSegmentationMetrics()
    metric.update(torch.from_numpy(target.astype(np.float32)), torch.from_numpy(target), torch.from_numpy(fov))
    values = metric.compute()
    assert all(float(values[k]) == pytest.approx(1.0) for k in ("f1_vessel", "f1_macro", "auc", "accuracy"))


def test_second_observer_matches_the_literature(drive_root):
    """DRIVE's 2nd observer reaches accuracy 0.9473 against the 1st (Staal et al. 2004; widely quoted)."""
    from synthmed_lightning.metrics.observer import second_observer_scores

    scores = second_observer_scores(str(drive_root))
    assert scores["accuracy"] == pytest.approx(0.9473, abs=0.0015)
    assert 0.76 < scores["f1_vessel"] < 0.81


def _miscalibrated(seed=0, shape=(2, 1, 30, 30)):
    """Vessels around 0.3, background around 0.1: perfectly separable, but nothing reaches 0.5."""
    rng = np.random.default_rng(seed)
    target = rng.random(shape) < 0.15
    probs = np.where(target, 0.3, 0.1) + rng.uniform(-0.04, 0.04, shape)
    return torch.from_numpy(probs.astype(np.float32)), torch.from_numpy(target), torch.ones(shape, dtype=torch.bool)


def test_best_threshold_separates_miscalibrated_probabilities():
    metric = VesselSegmentationMetrics()
    metric.update(*_miscalibrated())
    threshold, f1 = metric.best_threshold()
    assert 0.14 < threshold < 0.26  # inside the gap between the classes
    assert threshold == pytest.approx(0.2, abs=0.02)  # the middle of the tied thresholds
    assert f1 == pytest.approx(1.0)
    assert float(metric.compute()["f1_vessel"]) == 0.0  # at 0.5 every vessel is missed
    assert float(metric.scores_at(0.5)["f1_vessel"]) == 0.0
    at_best = metric.scores_at(threshold)
    assert float(at_best["f1_vessel"]) == pytest.approx(f1)
    assert float(at_best["sensitivity"]) == float(at_best["specificity"]) == 1.0


def test_histogram_scores_equal_the_confusion_matrix_at_its_threshold():
    """Bit for bit, also for probabilities lying exactly on (or one float32 step below) a threshold."""
    probs, target, fov = _arrays(3)
    edges = np.float32([0.3, 0.5, 0.0, 1.0])
    probs[0, 0, 10, 10:18] = np.concatenate([edges, np.nextafter(edges, np.float32(0))])
    for threshold in (0.5, 0.3, 0.005, 0.995):
        metric = VesselSegmentationMetrics(threshold)
        for i in range(2):
            metric.update(torch.from_numpy(probs[i]), torch.from_numpy(target[i]), torch.from_numpy(fov[i]))
        exact, binned = metric.compute(), metric.scores_at(threshold)
        for name in ("f1_vessel", "sensitivity", "specificity"):
            assert torch.equal(binned[name], exact[name]), (threshold, name)
        pred = probs[fov] >= np.float32(threshold)
        assert float(binned["f1_vessel"]) == pytest.approx(f1_score(target[fov], pred), abs=1e-6)


def test_best_threshold_is_the_best_of_the_grid():
    probs, target, fov = _arrays(4)
    probs = np.clip(target * 0.25 + np.random.default_rng(4).random(probs.shape) * 0.7, 0, 1).astype(np.float32)  # overlapping classes
    metric = VesselSegmentationMetrics()
    metric.update(torch.from_numpy(probs), torch.from_numpy(target), torch.from_numpy(fov))
    threshold, f1 = metric.best_threshold()
    p, t = probs[fov], target[fov]

    def f1_at(k):
        pred = p >= np.float32(k / 200)
        return 2 * (pred & t).sum() / (2 * (pred & t).sum() + (pred != t).sum())

    assert f1 == pytest.approx(max(f1_at(k) for k in range(1, 200)), abs=1e-12)
    assert f1 == pytest.approx(f1_score(t, p >= np.float32(threshold)), abs=1e-12)
    assert f1 > float(metric.compute()["f1_vessel"])
