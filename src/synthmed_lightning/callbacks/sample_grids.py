"""Publishing a generative stage's sample grid: PNGs in the run directory and images in the loggers."""

from pathlib import Path

import numpy as np

from synthmed_lightning.visualize import save_png


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
