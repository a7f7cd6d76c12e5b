"""Vessel segmentation scores computed only inside the field of view (FOV).

The retinal-vessel literature scores pixels inside the FOV mask. The paper's "F1" is not
defined further, so we report both readings (docs/design.md):
- f1_vessel: F1 of the vessel class (the literature standard, DRIVE U-Net ~0.81);
- f1_macro: mean of the vessel-class and background-class F1.
"""

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc

METRIC_NAMES = ("f1_vessel", "f1_macro", "auc", "accuracy", "sensitivity", "specificity")


class VesselSegmentationMetrics(Metric):
    """Accumulates a confusion matrix at `threshold` and the FOV pixels' probabilities for AUC.

    update(probs, target, fov): probabilities in [0, 1] (not logits), binary target, binary FOV,
    any matching shapes. AUC is exact (every FOV pixel is kept: ~5M for DRIVE's test set).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, threshold: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold
        for name in ("tp", "fp", "tn", "fn"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, target: torch.Tensor, fov: torch.Tensor) -> None:
        inside = fov.bool()
        p = probs.detach()[inside].float()
        t = target[inside].bool()
        pred = p >= self.threshold
        self.tp += (pred & t).sum()
        self.fp += (pred & ~t).sum()
        self.tn += (~pred & ~t).sum()
        self.fn += (~pred & t).sum()
        self.probs.append(p)
        self.targets.append(t.to(torch.uint8))

    def compute(self) -> dict[str, torch.Tensor]:
        tp, fp, tn, fn = (x.double() for x in (self.tp, self.fp, self.tn, self.fn))
        f1_vessel = _safe_div(2 * tp, 2 * tp + fp + fn)
        f1_background = _safe_div(2 * tn, 2 * tn + fn + fp)
        probs = _cat(self.probs)
        targets = _cat(self.targets)
        return {
            "f1_vessel": f1_vessel.float(),
            "f1_macro": ((f1_vessel + f1_background) / 2).float(),
            "auc": binary_auroc(probs, targets.long(), thresholds=None).float(),
            "accuracy": _safe_div(tp + tn, tp + tn + fp + fn).float(),
            "sensitivity": _safe_div(tp, tp + fn).float(),
            "specificity": _safe_div(tn, tn + fp).float(),
        }


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / den if den > 0 else torch.zeros_like(num)


def _cat(state) -> torch.Tensor:
    return torch.cat(state) if isinstance(state, list) else state
