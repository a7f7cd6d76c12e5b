"""stage=segment: train a U-Net on a dataset's training split, test it at native resolution."""

import time

import lightning as L
from omegaconf import DictConfig

from synthmed_lightning.callbacks.loss_history import LossHistory
from synthmed_lightning.callbacks.step_timer import step_timing
from synthmed_lightning.callbacks.prediction_writer import PredictionWriter
from synthmed_lightning.stages.common import (build_datamodule, build_trainer, finish_loggers, fit,
                                              instantiate_primitive, run_dir, scalar_metrics, write_json)


def run_segment(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    out = run_dir(cfg)
    datamodule = build_datamodule(cfg)
    model = instantiate_primitive(cfg.model, train_fov_diameter=datamodule.train_fov_diameter,
                                  preprocess=datamodule.preprocess)
    loss_history = LossHistory()
    trainer = build_trainer(cfg, callbacks=[loss_history, PredictionWriter(out / "predictions", model.hparams.threshold)])
    resumed_from = fit(trainer, model, datamodule, cfg)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    fit_seconds = time.perf_counter() - start
    trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
    metrics = {
        **scalar_metrics(trainer.callback_metrics, ("test/",)),
        **loss_history.summary(),
        **step_timing(trainer),
        "train/steps": trainer.global_step,
        "train/resumed_from_step": resumed_from,
        "time/fit_s": fit_seconds,
        "time/total_s": time.perf_counter() - start,
    }
    if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_score is not None:
        metrics["val/best_f1_vessel"] = float(trainer.checkpoint_callback.best_model_score)
    if trainer.is_global_zero:
        write_json(out / "metrics.json", metrics)
    finish_loggers()
    return metrics
