"""The human reference: how well DRIVE's second observer agrees with the first (the ground truth)."""

import torch

from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.metrics.segmentation import VesselSegmentationMetrics


def second_observer_scores(drive_root: str) -> dict[str, float]:
    """Scores of the 2nd manual segmentation against the 1st on DRIVE's test split, inside the FOV.

    A binary "prediction" has no ranking, so its AUC is that of a single operating point.
    """
    truth = read_dataset({"name": "drive", "root": drive_root}, "test")
    human = read_dataset({"name": "drive", "root": drive_root, "annotator": 2}, "test")
    metric = VesselSegmentationMetrics()
    for t, h in zip(truth, human):
        metric.update(torch.from_numpy(h.mask).float(), torch.from_numpy(t.mask), torch.from_numpy(t.fov))
    return {k: float(v) for k, v in metric.compute().items()}
