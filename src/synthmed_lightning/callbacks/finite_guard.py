"""Stops training at the first NaN/Inf loss, before a checkpoint can save the broken weights.

Without it a diverged run keeps going for hours and `last.ckpt` is overwritten with NaN weights,
so `ckpt_path=last` has nothing good to resume from. Lightning runs checkpoint callbacks after
all others, so this check of every `train/*` value logged this step comes first; a checkpoint
about to be written with non-finite weights is refused as well.
"""

from pathlib import Path

import lightning as L
import torch

from synthmed_lightning.errors import TrainingError


class FiniteGuard(L.Callback):
    def __init__(self, prefix: str = "train/"):
        self.prefix = prefix
        self.last_saved_step: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.last_saved_step = trainer.global_step if trainer.ckpt_path else None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for key, value in trainer.callback_metrics.items():
            if key.startswith(self.prefix) and isinstance(value, torch.Tensor) and not torch.isfinite(value).all():
                self._stop(trainer, f"{key} is {float(value.float().mean())}")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        bad = next((k for k, v in checkpoint.get("state_dict", {}).items()
                    if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()), None)
        if bad is not None:
            self._stop(trainer, f"weight {bad} is not finite")
        self.last_saved_step = trainer.global_step

    def _stop(self, trainer, what: str) -> None:
        callback = trainer.checkpoint_callback
        last = Path(callback.dirpath) / "last.ckpt" if callback is not None and callback.dirpath else None
        if self.last_saved_step is not None and last is not None:
            kept = f"The last good checkpoint, {last} (global step {self.last_saved_step}), is kept"
        else:
            kept = "No checkpoint had been saved"
        raise TrainingError(f"training diverged: {what} at global step {trainer.global_step}; stopped before saving. "
                            f"{kept}. Lower model.lr, then resume with ckpt_path=last (debug=anomaly finds the first bad operation)")
