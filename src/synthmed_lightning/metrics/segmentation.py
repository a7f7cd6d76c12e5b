"""Vessel segmentation scores computed only inside the field of view (FOV).

The retinal-vessel literature scores pixels inside the FOV mask. The paper's "F1" is not
defined further, so we report both readings (docs/design.md):
- f1_vessel: F1 of the vessel class (the literature standard, DRIVE U-Net ~0.81);
- f1_macro: mean of the vessel-class and background-class F1.

A U-Net trained on synthetic images is often mis-calibrated on real ones, so 0.5 can understate
it. The metric also keeps per-class histograms of the FOV probabilities, which give the
confusion matrix at every multiple of 1/bins: the threshold that maximises f1_vessel is chosen
on validation images and applied to the test images (models/segmenter.py).
"""

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc

METRIC_NAMES = ("f1_vessel", "f1_macro", "auc", "accuracy", "sensitivity", "specificity")
THRESHOLD_BINS = 200  # threshold grid step 0.005


class VesselSegmentationMetrics(Metric):
    """Accumulates a confusion matrix at `threshold`, the FOV pixels' probabilities for AUC, and
    per-class histograms of those probabilities for other thresholds.

    update(probs, target, fov): probabilities in [0, 1] (not logits), binary target, binary FOV,
    any matching shapes. AUC is exact (every FOV pixel is kept: ~5M for DRIVE's test set).
    `compute()` scores at `threshold`; `best_threshold()` and `scores_at(t)` score on the grid of
    thresholds k/bins (k = 1 .. bins-1) from the histograms, exactly (no interpolation).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, threshold: float = 0.5, bins: int = THRESHOLD_BINS, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold
        self.bins = bins
        # Row 0 background, row 1 vessel; bin k counts probabilities in [k/bins, (k+1)/bins).
        self.add_state("histogram", default=torch.zeros(2, bins, dtype=torch.long), dist_reduce_fx="sum")
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
        # One bincount over (class, bin) pairs; bucketize against the float32 grid makes
        # "bin >= k" the same test as "p >= k/bins" in the confusion matrix above.
        buckets = torch.bucketize(p, _grid(self.bins, p.device), right=True)
        self.histogram += torch.bincount(buckets + self.bins * t.long(), minlength=2 * self.bins).view(2, self.bins)

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

    def best_threshold(self) -> tuple[float, float]:
        """(threshold, f1_vessel) at the grid threshold that maximises f1_vessel; of tied
        thresholds the middle one, so a clean gap between the classes is split, not hugged."""
        f1 = self._grid_scores()["f1_vessel"]
        ties = torch.nonzero(f1 == f1.max()).flatten()
        k = int(ties[len(ties) // 2])
        return (k + 1) / self.bins, float(f1[k])

    def scores_at(self, threshold: float) -> dict[str, torch.Tensor]:
        """f1_vessel, sensitivity and specificity at `threshold`, taken to the nearest grid
        threshold k/bins (exact for multiples of 1/bins, such as 0.5 or a `best_threshold()`)."""
        k = min(max(round(threshold * self.bins), 1), self.bins - 1)
        return {name: values[k - 1].float() for name, values in self._grid_scores().items()}

    def _grid_scores(self) -> dict[str, torch.Tensor]:
        """Scores (float64) at every grid threshold k/bins, k = 1 .. bins-1, over all ranks."""
        # Only compute() syncs across DDP ranks on its own; do the same here.
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            histogram = self.histogram.double()
        # Pixels predicted vessel at threshold k/bins are those in bins k and above.
        above = histogram.flip(-1).cumsum(-1).flip(-1)[:, 1:]
        total = histogram.sum(-1, keepdim=True)
        fp, tp = above
        tn, fn = (total - above)
        return {
            "f1_vessel": _safe_div_each(2 * tp, 2 * tp + fp + fn),
            "sensitivity": _safe_div_each(tp, tp + fn),
            "specificity": _safe_div_each(tn, tn + fp),
        }


def _grid(bins: int, device) -> torch.Tensor:
    """The thresholds k/bins, k = 1 .. bins-1, rounded to float32 as the probabilities are."""
    return (torch.arange(1, bins, dtype=torch.float64, device=device) / bins).float()


def _safe_div_each(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1), torch.zeros_like(num))


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return num / den if den > 0 else torch.zeros_like(num)


def _cat(state) -> torch.Tensor:
    return torch.cat(state) if isinstance(state, list) else state
