"""The painter-fidelity measure's parts: the per-image vessel scores and their summary."""

import numpy as np
import pytest

from synthmed_lightning.study.fidelity import _summary, vessel_scores


def _lines() -> np.ndarray:
    mask = np.zeros((40, 40), np.uint8)
    mask[5, 5:35] = 1          # 1 px wide: thin
    mask[12:14, 5:35] = 1      # 2 px wide: thin
    mask[20:26, 5:35] = 1      # 6 px wide: thick
    return mask


def test_vessel_scores_split_recall_into_thin_and_thick():
    mask, fov = _lines(), np.ones((40, 40), np.uint8)
    only_thick = np.zeros((40, 40))
    only_thick[20:26, 5:35] = 0.9
    only_thick[30, 5:15] = 0.9   # 10 false-positive pixels
    scores = _summary([vessel_scores(only_thick, mask, fov)])
    assert scores["recall_thin"] == 0 and scores["recall_thick"] == 1
    assert scores["specificity"] == pytest.approx(1 - 10 / (40 * 40 - mask.sum()))
    perfect = _summary([vessel_scores(mask.astype(float), mask, fov)])
    assert perfect == {"f1_vessel": 1.0, "specificity": 1.0, "recall_thin": 1.0, "recall_thick": 1.0}
