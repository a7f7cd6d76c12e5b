"""The generative stages' sample grids: PNGs in the run directory and images in the loggers."""

from pathlib import Path

import cv2
import lightning as L
import numpy as np

from synthmed_lightning.visualize import image_grid, save_png


def publish_sample_grid(trainer, out_dir: Path, iteration: int, grid: np.ndarray, caption: str) -> None:
    """`<out_dir>/step_<iteration>.png` and `latest.png`, and the grid logged as `val/samples` to
    W&B (`log_image`) and TensorBoard (`add_image`). Call on rank 0 only."""
    save_png(out_dir / f"step_{iteration:06d}.png", grid)
    save_png(out_dir / "latest.png", grid)
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # W&B
            logger.log_image(key="val/samples", images=[grid], caption=[caption], step=trainer.global_step)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
            logger.experiment.add_image("val/samples", grid, trainer.global_step, dataformats="HWC")


class NoiseSampleGridWriter(L.Callback):
    """The noise GANs (stage=mask, stage=single): each validation's fixed-noise sample grid to
    `<out_dir>/step_<iteration>.png` and `latest.png` (iteration = generator iterations), the real
    training items once to `real.png`. Rank 0 only."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.is_global_zero or not outputs or "grids" not in outputs:
            return
        iteration = outputs["iteration"]
        publish_sample_grid(trainer, self.out_dir, iteration, outputs["grids"]["samples"], f"iteration {iteration}")
        if not (self.out_dir / "real.png").is_file():
            save_png(self.out_dir / "real.png", outputs["grids"]["real"])


class PaintingGridWriter(L.Callback):
    """Stage II (stage=image): after each validation, `<out_dir>/step_XXXXXX.png` (XXXXXX = generator
    steps) and `latest.png`, one row per validation image: mask | painted | real. Rank 0 only."""

    def __init__(self, out_dir: str | Path, max_rows: int = 4, max_side: int = 512):
        self.out_dir = Path(out_dir)
        self.max_rows = max_rows
        self.max_side = max_side

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        rows = pl_module.val_samples[: self.max_rows]
        if not rows or not trainer.is_global_zero or trainer.sanity_checking:
            return
        h, w = rows[0][0].shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        tiles = [cv2.resize(tile, size, interpolation=cv2.INTER_AREA) if tile.shape[:2] != size[::-1] else tile
                 for row in rows for tile in row]
        publish_sample_grid(trainer, self.out_dir, pl_module.generator_steps, image_grid(tiles, columns=3),
                            "mask | generated | real")
