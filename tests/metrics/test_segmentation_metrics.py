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
