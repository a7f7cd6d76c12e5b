"""Writes each test image's probability map and overlay, and logs a few overlays as images."""

from pathlib import Path

import lightning as L
import numpy as np

from synthmed_lightning.visualize import overlay_prediction, save_png


class PredictionWriter(L.Callback):
    """`<out_dir>/<stem>_prob.png` (8-bit probability at native size) and `<stem>_overlay.png`.

    The probability maps let anyone recompute the metrics; the first `log_images` overlays also
    go to every logger that takes images (W&B).
    """

    def __init__(self, out_dir: str, threshold: float = 0.5, log_images: int = 4):
        self.out_dir = Path(out_dir)
        self.threshold = threshold
        self.log_images = log_images
        self._logged: list[tuple[str, np.ndarray]] = []

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._logged = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        for i, stem in enumerate(batch["stem"]):
            probs = outputs["probs"][i, 0].float().cpu().numpy()
            rgb = batch["rgb"][i].cpu().numpy()
            mask = batch["mask"][i, 0].cpu().numpy() if "mask" in batch else None
            fov = batch["fov"][i, 0].cpu().numpy()
            overlay = overlay_prediction(rgb, probs >= self.threshold, mask, fov)
            save_png(self.out_dir / f"{stem}_prob.png", np.round(probs * 255).astype(np.uint8))
            save_png(self.out_dir / f"{stem}_overlay.png", overlay)
            if len(self._logged) < self.log_images:
                self._logged.append((stem, overlay))

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if not self._logged or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                stems, images = zip(*self._logged)
                logger.log_image(key="test/overlays", images=list(images), caption=list(stems))
