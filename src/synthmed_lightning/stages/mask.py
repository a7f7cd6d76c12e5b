"""stage=mask (Stage I): train a DCGAN from noise to vessel masks on a dataset's training masks.

Also the shared runner of the single-GAN baseline (`stages/single.py`). The budget is
`profile.<stage>.iterations` generator iterations (one D step + one G step each, so
`trainer.max_steps` is twice that, set in the stage config). Every `profile.<stage>.val_every`
iterations the EMA generator draws fixed-noise samples: their statistics go to the loggers as
`val/...` and their grid to `<run dir>/samples/`. At the end `metrics.json` holds the final sample
statistics, those of the untrained generator (`init/...`), first/last losses and times.
"""

import time

import lightning as L
from omegaconf import DictConfig

from synthmed_lightning.callbacks.loss_history import GANLossHistory
from synthmed_lightning.callbacks.sample_grids import NoiseSampleGridWriter
from synthmed_lightning.callbacks.step_timer import step_timing
from synthmed_lightning.data.mask_data import MaskDataModule, check_image_size
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.models.gan_base import GANModule
from synthmed_lightning.models.mask_gan import MaskGAN
from synthmed_lightning.stages.common import (build_datamodule, build_trainer, finish_loggers, fit, gan_strategy,
                                              instantiate_primitive, plan_privacy, run_dir, scalar_metrics,
                                              write_json)


def run_mask(cfg: DictConfig) -> dict:
    return train_gan(cfg, MaskGAN)


def train_gan(cfg: DictConfig, module_class: type[GANModule]) -> dict:
    start = time.perf_counter()
    L.seed_everything(cfg.seed, workers=True)
    out = run_dir(cfg)
    datamodule = build_datamodule(cfg)
    if not isinstance(datamodule, MaskDataModule):
        raise ConfigError(f"stage={cfg.stage} needs data._target_=synthmed_lightning.data.mask_data.MaskDataModule, "
                          f"got {type(datamodule).__name__}")
    datamodule.prepare()
    check_image_size(cfg.model.generator.get("image_size"), "model.generator.image_size")
    if cfg.model.generator.image_size != datamodule.image_size:
        raise ConfigError(f"model.generator.image_size={cfg.model.generator.image_size} differs from "
                          f"data.image_size={datamodule.image_size}")
    privacy = plan_privacy(cfg, datamodule, images=len(datamodule.masks))
    try:
        threshold = datamodule.mask_threshold if datamodule.soft_masks else 0.5
        model = instantiate_primitive(cfg.model, source_size=datamodule.source_size, sample_threshold=threshold,
                                      privacy=privacy)
    except ValueError as error:  # an unknown loss, DiffAugment policy, upsampling mode, ...
        raise ConfigError(str(error).splitlines()[0]) from None
    if not isinstance(model, module_class):
        raise ConfigError(f"stage={cfg.stage} trains a {module_class.__name__}, but model._target_ builds a {type(model).__name__}")
    model.set_fov(datamodule.fov)
    init_stats = model.sample_statistics(datamodule.reference(), prefix="init/")

    histories = [GANLossHistory("train/g_loss"), GANLossHistory("train/d_loss")]
    trainer = build_trainer(cfg, callbacks=[*histories, NoiseSampleGridWriter(out / "samples")],
                            strategy=gan_strategy(cfg.trainer))
    fit_start = time.perf_counter()
    resumed_from = fit(trainer, model, datamodule, cfg)
    fit_seconds = time.perf_counter() - fit_start
    iterations = int(model.iterations_done)
    trainer.validate(model, datamodule=datamodule, verbose=False)  # final statistics and grid
    metrics = {
        **scalar_metrics(trainer.callback_metrics, ("val/",)),
        **init_stats,
        **{k: v for h in histories for k, v in h.summary().items()},
        **step_timing(trainer),
        **model.privacy_spent(),
        "train/iterations": iterations,
        "train/steps": trainer.global_step,
        "train/resumed_from_step": resumed_from,
        "time/fit_s": fit_seconds,
        "time/s_per_iteration": fit_seconds / max(1, iterations),
        "time/total_s": time.perf_counter() - start,
    }
    if trainer.is_global_zero:
        write_json(out / "metrics.json", metrics)
    finish_loggers()
    return metrics
