"""stage=segment: train a U-Net on a dataset's training split, test it at native resolution."""

from omegaconf import DictConfig

from synthmed_lightning.callbacks.loss_history import LossHistory
from synthmed_lightning.callbacks.prediction_writer import PredictionWriter
from synthmed_lightning.stages.common import run_dir, scalar_metrics
from synthmed_lightning.stages.training import TrainingStage, train_stage


class SegmentStage(TrainingStage):
    """Picks the best checkpoint on the validation images (`val/f1_vessel` at `model.threshold`) and
    tests it; `test/*_at_val_threshold` score it also at the threshold it chose on those images
    (`test/val_threshold`, see models/segmenter.py). All `test/` keys reach metrics.json."""

    def __init__(self):
        self.loss_history = LossHistory()

    def model_arguments(self, cfg: DictConfig, datamodule) -> dict:
        # The checkpoint keeps the scale and preprocessing it learned with, for evaluation on other data.
        return {"train_fov_diameter": datamodule.train_fov_diameter, "preprocess": datamodule.preprocess}

    def callbacks(self, cfg: DictConfig, model) -> list:
        return [self.loss_history, PredictionWriter(run_dir(cfg) / "predictions", model.hparams.threshold)]

    def evaluate(self, trainer, model, datamodule) -> dict:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics = {**scalar_metrics(trainer.callback_metrics, ("test/",)), **self.loss_history.summary()}
        if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_score is not None:
            metrics["val/best_f1_vessel"] = float(trainer.checkpoint_callback.best_model_score)
        return metrics


def run_segment(cfg: DictConfig) -> dict:
    return train_stage(cfg, SegmentStage())
