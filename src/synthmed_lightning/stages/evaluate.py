"""stage=evaluate: test a trained segment checkpoint on any dataset, without training.

The checkpoint carries its preprocessing and training scale: the dataset's test images are
preprocessed the same way and resampled to that scale, predictions mapped back to native size.
"""

import time

from omegaconf import DictConfig

from synthmed_lightning.callbacks.prediction_writer import PredictionWriter
from synthmed_lightning.checkpoints import load_module
from synthmed_lightning.loggers import finish_loggers
from synthmed_lightning.models.segmenter import Segmenter
from synthmed_lightning.stages.common import build_datamodule, build_trainer, run_dir, scalar_metrics
from synthmed_lightning.utils import write_json


def run_evaluate(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    model = load_module(Segmenter, cfg.ckpt_path, "segment")
    datamodule = build_datamodule(cfg, preprocess=model.hparams.preprocess)
    out = run_dir(cfg)
    trainer = build_trainer(cfg, callbacks=[PredictionWriter(out / "predictions", model.hparams.threshold)])
    trainer.test(model, datamodule=datamodule)
    metrics = {
        **scalar_metrics(trainer.callback_metrics, ("test/",)),
        "model/train_fov_diameter": float(model.hparams.train_fov_diameter or 0.0),
        "time/total_s": time.perf_counter() - start,
    }
    if trainer.is_global_zero:
        write_json(out / "metrics.json", metrics)
    finish_loggers()
    return metrics
