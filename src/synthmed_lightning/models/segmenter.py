"""U-Net vessel segmenter: trained on patches, validated and tested on whole images inside the FOV."""

import logging

import lightning as L
import torch
import torch.nn.functional as F

from synthmed_lightning.checkpoints import STAGE_KEY
from synthmed_lightning.inference import sliding_window_predict
from synthmed_lightning.metrics.segmentation import VesselSegmentationMetrics
from synthmed_lightning.models.components.registry import build_network

log = logging.getLogger(__name__)

# Below this relative scale difference, resampling would only blur: predict at native size.
_SCALE_TOLERANCE = 0.05
# Checkpoint key of the threshold chosen on the validation images (absent before it existed).
VAL_THRESHOLD_KEY = "synthmed_val_threshold"


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - Dice on probabilities, over the whole batch: it counters the 1:8 vessel/background imbalance."""
    probs = torch.sigmoid(logits)
    intersection = (probs * target).sum()
    return 1 - (2 * intersection + eps) / (probs.sum() + target.sum() + eps)


def _exact(value: float) -> torch.Tensor:
    """A float64 tensor: Lightning logs plain floats as float32, which would turn 0.455 into 0.45500001."""
    return torch.tensor(value, dtype=torch.float64)


class Segmenter(L.LightningModule):
    """Binary vessel segmentation with a configurable network (`net` is a `_target_` dict naming one of
    `models/components/registry.py`'s networks).

    Everything needed to reuse a checkpoint on other data is a hyperparameter: the network,
    the input preprocessing and `train_fov_diameter`, the FOV scale (px) the model was trained at.
    At evaluation each image is resampled to that scale and the prediction mapped back to native size.

    Besides the scores at `threshold`, each validation picks the threshold that maximises
    f1_vessel on the validation images (`val_threshold`, saved in checkpoints), and the test
    reports f1_vessel, sensitivity and specificity at it too: probabilities of a U-Net trained
    on synthetic images are often mis-calibrated on real ones. The threshold is never chosen on
    the test images.
    """

    def __init__(self, net: dict, lr: float = 2e-3, weight_decay: float = 1e-4, dice_weight: float = 1.0,
                 threshold: float = 0.5, tile_size: int = 256, overlap: float = 0.25,
                 train_fov_diameter: float | None = None, preprocess: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_network(net, "net")
        self.val_metrics = VesselSegmentationMetrics(threshold)
        self.test_metrics = VesselSegmentationMetrics(threshold)
        self.val_threshold: float | None = None  # None until a validation (or a checkpoint) sets it

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        bce = F.binary_cross_entropy_with_logits(logits, batch["mask"])
        dice = soft_dice_loss(logits, batch["mask"])
        loss = bce + self.hparams.dice_weight * dice
        self.log_dict({"train/loss": loss, "train/bce": bce, "train/dice": dice}, prog_bar=True)
        return loss

    def predict_probabilities(self, image: torch.Tensor, fov_diameter: float) -> torch.Tensor:
        """Vessel probabilities for a whole (1, C, H, W) image at its native size."""
        h, w = image.shape[-2:]
        scale = (self.hparams.train_fov_diameter or fov_diameter) / fov_diameter
        rescale = abs(scale - 1) > _SCALE_TOLERANCE
        if rescale:
            image = F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False, antialias=scale < 1)
        logits = sliding_window_predict(self.net, image, self.hparams.tile_size, self.hparams.overlap,
                                        getattr(self.net, "size_multiple", 16))
        if rescale:
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)

    def _evaluate(self, batch: dict, metrics: VesselSegmentationMetrics) -> torch.Tensor:
        probs = self.predict_probabilities(batch["image"], float(batch["fov_diameter"][0]))
        metrics.update(probs, batch["mask"], batch["fov"])
        return probs

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        threshold, f1 = self.val_metrics.best_threshold()
        # The sanity check's untrained network must not leave its threshold in a checkpoint.
        if not (self._trainer is not None and self.trainer.sanity_checking):
            self.val_threshold = threshold
        self._log_metrics("val", self.val_metrics,
                          {"val/best_threshold": _exact(threshold), "val/f1_vessel_best_threshold": f1})

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return {"probs": self._evaluate(batch, self.test_metrics)}

    def on_test_epoch_end(self) -> None:
        threshold = self.val_threshold
        if threshold is None:
            threshold = self.hparams.threshold
            if self._trainer is None or self.trainer.is_global_zero:
                log.warning("No threshold chosen on validation images came with this model (its checkpoint predates "
                            "them or was restored without on_load_checkpoint, or no validation ran): "
                            "test/*_at_val_threshold use model.threshold=%s", threshold)
        at = self.test_metrics.scores_at(threshold)
        self._log_metrics("test", self.test_metrics, {
            "test/f1_vessel_at_val_threshold": at["f1_vessel"],
            "test/sensitivity_at_val_threshold": at["sensitivity"],
            "test/specificity_at_val_threshold": at["specificity"],
            "test/val_threshold": _exact(threshold),
        })

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"probs": self.predict_probabilities(batch["image"], float(batch["fov_diameter"][0])), "stem": batch["stem"]}

    def _log_metrics(self, prefix: str, metrics: VesselSegmentationMetrics, extra: dict) -> None:
        # compute() and the threshold scores already gather every rank's state, so the values are global.
        values = {f"{prefix}/{k}": v for k, v in metrics.compute().items()}
        self.log_dict(values, prog_bar=prefix == "val", sync_dist=False)
        self.log_dict(extra, sync_dist=False)
        metrics.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[STAGE_KEY] = "segment"
        if self.val_threshold is not None:
            checkpoint[VAL_THRESHOLD_KEY] = self.val_threshold

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Takes the tested checkpoint's own validation threshold (trainer.test reloads the best one)."""
        value = checkpoint.get(VAL_THRESHOLD_KEY)
        # A checkpoint is data from elsewhere; older ones have no threshold (on_test_epoch_end says so).
        self.val_threshold = value if isinstance(value, float) and 0.0 <= value <= 1.0 else None

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.hparams.lr, total_steps=steps, pct_start=0.1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
