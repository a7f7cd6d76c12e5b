"""The one training runner every training stage (segment, mask, single, image) goes through.

`train_stage(cfg, stage)` is the skeleton: seed -> datamodule -> model -> trainer -> fit (or resume)
-> final evaluation -> `metrics.json` (rank 0) -> loggers closed. A stage says only what differs,
by overriding the hooks of `TrainingStage`: its checks, how it prepares the data, what the model
is given, its callbacks and what it measures at the end. The order of the steps is fixed because
each may draw random numbers: same seed, same order, same result.
"""

import time

import lightning as L
from omegaconf import DictConfig

from synthmed_lightning.callbacks.step_timer import step_timing
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.loggers import finish_loggers
from synthmed_lightning.stages.common import (build_datamodule, build_trainer, fit, gan_strategy, instantiate_primitive,
                                              run_dir)
from synthmed_lightning.utils import write_json


class TrainingStage:
    """Hooks of one training stage; the defaults are what a plain supervised stage needs."""

    gan = False  # GANs train by manual optimisation and need find-unused-parameters DDP (docs/pitfalls.md)

    def check(self, cfg: DictConfig) -> None:
        """Settings this stage cannot run with, as ConfigError, before anything is built."""

    def datamodule(self, cfg: DictConfig):
        return build_datamodule(cfg)

    def model_arguments(self, cfg: DictConfig, datamodule) -> dict:
        """Constructor arguments the model takes from the data (its scale, its statistics, ...)."""
        return {}

    def prepare(self, model, datamodule) -> dict:
        """Work on the built model before training; returns metrics to record (e.g. of the untrained model)."""
        return {}

    def callbacks(self, cfg: DictConfig, model) -> list:
        return []

    def evaluate(self, trainer: L.Trainer, model, datamodule) -> dict:
        """Metrics of the trained model, measured after fit."""
        return {}


def build_model(cfg: DictConfig, stage: TrainingStage, datamodule):
    """`cfg.model` with the stage's data-dependent arguments; a wrong setting is one ConfigError line."""
    try:
        return instantiate_primitive(cfg.model, **stage.model_arguments(cfg, datamodule))
    except ValueError as error:  # an unknown loss, a bad dropout or depth, ...
        raise ConfigError(f"model: {str(error).splitlines()[0]}") from None


def train_stage(cfg: DictConfig, stage: TrainingStage) -> dict:
    start = time.perf_counter()
    stage.check(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = stage.datamodule(cfg)
    model = build_model(cfg, stage, datamodule)
    metrics = stage.prepare(model, datamodule)
    overrides = {"strategy": gan_strategy(cfg.trainer)} if stage.gan else {}
    trainer = build_trainer(cfg, callbacks=stage.callbacks(cfg, model), **overrides)
    fit_start = time.perf_counter()
    resumed_from = fit(trainer, model, datamodule, cfg)
    fit_seconds = time.perf_counter() - fit_start
    metrics.update(stage.evaluate(trainer, model, datamodule))
    metrics.update({
        **step_timing(trainer),
        "train/steps": trainer.global_step,
        "train/resumed_from_step": resumed_from,
        "time/fit_s": fit_seconds,
    })
    if stage.gan:  # budgets are generator iterations (one D and one G step each)
        iterations = int(metrics["train/iterations"])
        metrics["time/s_per_iteration"] = fit_seconds / max(1, iterations)
    metrics["time/total_s"] = time.perf_counter() - start
    if trainer.is_global_zero:
        write_json(run_dir(cfg) / "metrics.json", metrics)
    finish_loggers()
    return metrics
