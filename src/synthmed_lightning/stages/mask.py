"""stage=mask (Stage I): train a DCGAN from noise to vessel masks on a dataset's training masks.

`NoiseGANStage` is also the runner of the single-GAN baseline (`stages/single.py`). The budget is
`profile.<stage>.iterations` generator iterations (one D step + one G step each, so
`trainer.max_steps` is twice that, set in the stage config). Every `profile.<stage>.val_every`
iterations the EMA generator draws fixed-noise samples: their statistics go to the loggers as
`val/...` and their grid to `<run dir>/samples/`. At the end `metrics.json` holds the final sample
statistics, those of the untrained generator (`init/...`), first/last losses and times, and for
Stage I the anatomy of samples at native size as the export draws them (`native_anatomy`).

Stage I's mask refiner (`model.refiner`, docs/stage1.md) trains in the same run on native crops the
datamodule serves (`data.native_crop`); with `model.refiner=null` none are drawn.
"""

import logging

import numpy as np
import torch
from omegaconf import DictConfig

from synthmed_lightning.callbacks.loss_history import GANLossHistory
from synthmed_lightning.callbacks.sample_grids import NoiseSampleGridWriter
from synthmed_lightning.data.edge_fade import EdgeFade
from synthmed_lightning.data.mask_data import MaskDataModule, check_image_size
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.metrics.mask_stats import (HEADLINE_KEYS, anatomy_halves, anatomy_statistics, compare_anatomy,
                                                   leave_one_out_copy_iou, mean_anatomy, mean_pairwise_iou,
                                                   per_mask_anatomy, relative_difference, width_quantile)
from synthmed_lightning.models.gan_base import GANModule
from synthmed_lightning.models.mask_gan import REFINER_UNDER_DP, MaskGAN
from synthmed_lightning.stages.common import build_datamodule, plan_privacy, run_dir, scalar_metrics, under_privacy
from synthmed_lightning.stages.training import TrainingStage, train_stage

log = logging.getLogger(__name__)

# `model.max_vessel_width: fit` caps the samples' vessels at the width this share of the real masks'
# centre line does not exceed. A 64 px layout draws 10-13 % of its centre line 8 px or wider, the real
# masks 2 %: capped at this quantile the samples' share comes down to the real one (docs/stage1.md).
WIDTH_QUANTILE = 0.95


class NoiseGANStage(TrainingStage):
    """A DCGAN from noise (Stage I, or the single-GAN baseline) on squared, resized training masks."""

    gan = True

    def __init__(self, module_class: type[GANModule]):
        self.module_class = module_class
        self.histories = [GANLossHistory("train/g_loss"), GANLossHistory("train/d_loss")]

    def check(self, cfg: DictConfig) -> None:
        # Before the data and the DP plan are built: the refiner would learn from the real masks without DP-SGD.
        if cfg.model.get("refiner") and under_privacy(cfg):
            raise ConfigError(REFINER_UNDER_DP)

    def datamodule(self, cfg: DictConfig) -> MaskDataModule:
        # The refiner's native crops only when there is a refiner to learn from them.
        without_refiner = "native_crop" in cfg.data and not cfg.model.get("refiner")
        datamodule = build_datamodule(cfg, **({"native_crop": 0} if without_refiner else {}))
        if not isinstance(datamodule, MaskDataModule):
            raise ConfigError(f"stage={cfg.stage} needs data._target_=synthmed_lightning.data.mask_data.MaskDataModule, "
                              f"got {type(datamodule).__name__}")
        datamodule.prepare()
        check_image_size(cfg.model.generator.get("image_size"), "model.generator.image_size")
        if cfg.model.generator.image_size != datamodule.image_size:
            raise ConfigError(f"model.generator.image_size={cfg.model.generator.image_size} differs from "
                              f"data.image_size={datamodule.image_size}")
        return datamodule

    def model_arguments(self, cfg: DictConfig, datamodule) -> dict:
        threshold = datamodule.mask_threshold if datamodule.soft_masks else 0.5
        arguments = {"source_size": datamodule.source_size, "sample_threshold": threshold,
                     "coverage_power": datamodule.gan_power,
                     "privacy": plan_privacy(cfg, datamodule, images=len(datamodule.masks))}
        if self.module_class is MaskGAN:
            arguments["refiner_reads_coverage"] = datamodule.soft_masks  # what its training crops hold
            arguments["edge_fade"] = edge_fade(cfg, datamodule)
            arguments["max_vessel_width"] = max_vessel_width(cfg, datamodule)
        return arguments

    def prepare(self, model, datamodule) -> dict:
        if not isinstance(model, self.module_class):
            raise ConfigError(f"this stage trains a {self.module_class.__name__}, but model._target_ builds a "
                              f"{type(model).__name__}")
        model.set_fov(datamodule.fov)
        return model.sample_statistics(datamodule.reference(), prefix="init/")

    def callbacks(self, cfg: DictConfig, model) -> list:
        return [*self.histories, NoiseSampleGridWriter(run_dir(cfg) / "samples")]

    def evaluate(self, trainer, model, datamodule) -> dict:
        iterations = int(model.iterations_done)
        trainer.validate(model, datamodule=datamodule, verbose=False)  # final statistics and grid
        anatomy = native_anatomy(model, datamodule) if isinstance(model, MaskGAN) and trainer.is_global_zero else {}
        return {
            **scalar_metrics(trainer.callback_metrics, ("val/",)),
            **anatomy,
            **{k: v for h in self.histories for k, v in h.summary().items()},
            **model.privacy_spent(),
            "train/iterations": iterations,
        }


def edge_fade(cfg: DictConfig, datamodule: MaskDataModule) -> dict | None:
    """`EdgeFade` fitted on the training masks as a dict, or None: with `edge_fade=false`, and under
    privacy=dp (the fit reads the real masks without DP-SGD)."""
    if not cfg.get("edge_fade") or under_privacy(cfg):
        return None
    try:
        return EdgeFade.fit(*zip(*datamodule.native)).to_dict()
    except ValueError as error:  # no vessel near an edge (a tiny phantom)
        log.warning("edge fade not fitted, Stage I's masks keep their vessels at the FOV's edge: %s", error)
        return None


def max_vessel_width(cfg: DictConfig, datamodule: MaskDataModule) -> float | None:
    """`model.max_vessel_width` as the model gets it: a number or null as set; `fit` becomes the width
    that `WIDTH_QUANTILE` of the training masks' centre line does not exceed (7 px on DRIVE), kept in
    the checkpoint like `edge_fade`. Under privacy=dp `fit` is off (it reads the real masks without DP-SGD)."""
    width = cfg.model.get("max_vessel_width")
    if width != "fit":
        return width
    if under_privacy(cfg):
        log.info("model.max_vessel_width=fit is off under privacy=dp: the fit would read the real masks")
        return None
    masks, fovs = zip(*datamodule.native) if datamodule.native else ((), ())
    fitted = width_quantile(masks, WIDTH_QUANTILE, fovs)
    if not np.isfinite(fitted) or fitted < 1:
        log.warning("model.max_vessel_width=fit: the training masks have no vessels to fit a width on; no cap")
        return None
    log.info("model.max_vessel_width=fit: %.1f px, the %g quantile of the training masks' vessel widths",
             fitted, WIDTH_QUANTILE)
    return fitted


def native_anatomy(model: MaskGAN, datamodule: MaskDataModule, count: int = 16) -> dict[str, float]:
    """Anatomy (`metrics/mask_stats.anatomy_statistics`) of `count` samples at the training images'
    native size, drawn as `stage=generate` exports them (`MaskGAN.generate_native`: through the refiner
    when there is one), beside the real training masks' own: `anatomy/<key>`, `anatomy_real/<key>` and
    the relative differences `anatomy_vs_real/<key>`, and `anatomy_real_halves/<key>`, how far two
    halves of the real masks lie apart by the same measure (`anatomy_halves`: the comparison's noise
    floor). `native_diversity` adds how alike the samples are among themselves.
    With a refiner also `refiner/dice`, its Dice on the training masks' own coarse versions (how well
    it learned the mapping, not a held-out score)."""
    height, width = datamodule.source_size
    real = [(m, f) for m, f in datamodule.native if m.shape == (height, width)]
    if not real:
        return {}
    samples = model.generate_native(count, model.hparams.sample_seed, height, width)
    generated = anatomy_statistics(samples["mask"] > 0, samples["fov"][0] > 0)
    per_real_mask = per_mask_anatomy(np.stack([m for m, _ in real]), np.stack([f for _, f in real]))
    measured = mean_anatomy(per_real_mask)
    out = {**{f"anatomy/{k}": v for k, v in generated.items() if k in HEADLINE_KEYS},
           **{f"anatomy_real/{k}": v for k, v in measured.items() if k in HEADLINE_KEYS},
           **{f"anatomy_vs_real/{k}": v for k, v in compare_anatomy(generated, measured).items()},
           **{f"anatomy_real_halves/{k}": v for k, v in anatomy_halves(per_real_mask).items()}}
    out.update(native_diversity(samples["mask"] > 0, np.stack([m & f for m, f in real])))
    if model.refiner is not None:
        out["refiner/dice"] = refiner_dice(model, datamodule, height, width)
    return out


def native_diversity(samples: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """How alike the native samples are, beside how alike the real masks are (the `val/` figures are
    the coarse samples'): `pairwise_iou`, the mean IoU over all pairs, and `twin_iou`, the median over
    masks of the IoU with the most alike other mask, on as many real masks as samples at most (a larger
    set holds closer twins). A generator that draws a few layouts again and again shows in `twin_iou`
    before the mean over all pairs moves."""
    real = real[:len(samples)]
    out = {}
    for key, measure in (("pairwise_iou", mean_pairwise_iou),
                         ("twin_iou", lambda m: float(np.median(leave_one_out_copy_iou(m, flips=False))))):
        sampled, among_real = measure(samples), measure(real)
        out.update({f"anatomy/{key}": sampled, f"anatomy_real/{key}": among_real,
                    f"anatomy_vs_real/{key}": relative_difference(sampled, among_real)})
    return out


def refiner_dice(model: MaskGAN, datamodule: MaskDataModule, height: int, width: int) -> float:
    """Dice of the refined coarse training masks against the real ones, inside the FOV, pooled."""
    coarse = torch.from_numpy(datamodule.coarse_masks().astype(np.float32))[:, None]
    overlap = total = 0
    for refined, (mask, fov) in zip(model.refine(coarse, height, width), datamodule.native):
        if mask.shape == (height, width):
            refined, mask = refined.astype(bool) & fov, mask & fov
            overlap += int(np.count_nonzero(refined & mask))
            total += int(np.count_nonzero(refined)) + int(np.count_nonzero(mask))
    return 2 * overlap / total if total else float("nan")


def run_mask(cfg: DictConfig) -> dict:
    return train_stage(cfg, NoiseGANStage(MaskGAN))
