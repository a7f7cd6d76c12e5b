"""A Rich progress bar that tells where the whole run is, not only the epoch.

Lightning's RichProgressBar titles the bar `Epoch 1/-2` when a run is bounded by steps
(max_epochs=-1) and counts batches of the current epoch only. Every training stage here is
bounded by `trainer.max_steps`, so the title shows the optimizer step against that budget
(GAN stages count two optimizer steps per generator iteration).
"""

from lightning.pytorch.callbacks import RichProgressBar


def run_description(epoch: int, max_epochs: int | None, step: int, max_steps: int) -> str:
    """`Epoch 3 · step 420/1600`; `Epoch 3/9` when the run is bounded by epochs."""
    text = f"Epoch {epoch}"
    if max_epochs is not None and max_epochs > 0:
        text += f"/{max_epochs - 1}"
    if max_steps is not None and max_steps > 0:
        text += f" · step {step}/{max_steps}"
    return text


class RunProgressBar(RichProgressBar):
    """RichProgressBar whose title counts the run's steps against `trainer.max_steps`."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        return run_description(current_epoch, trainer.max_epochs, trainer.global_step, trainer.max_steps)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id,
                                 description=self._get_train_description(trainer.current_epoch))
