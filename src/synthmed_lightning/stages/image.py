"""stage=image (Stage II): train pix2pix to paint fundus images onto vessel masks.

Budget: `profile.image.iterations` generator iterations (batches; one D and one G step each).
Lightning's `trainer.max_steps` counts optimizer steps, so the stage config sets it to twice that
with the `gan_max_steps` resolver, as Stage I does. Under DDP the GAN needs the
`*_find_unused_parameters_true` strategies (docs/pitfalls.md: D's step leaves G without gradients):
`train_stage` picks them. Files (samples, metrics.json) are written by rank 0.
"""

import logging

from omegaconf import DictConfig

from synthmed_lightning.callbacks.loss_history import LossHistory
from synthmed_lightning.callbacks.sample_grids import PaintingGridWriter
from synthmed_lightning.data.appearance import AppearanceModel
from synthmed_lightning.data.fov_rim import FovRim
from synthmed_lightning.data.nuisance import NuisanceModel
from synthmed_lightning.data.optic_disc import OpticDisc
from synthmed_lightning.data.vessel_profile import VesselProfile
from synthmed_lightning.data.transforms import resize_sample
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.models.dp import pix2pix_sensitivity
from synthmed_lightning.stages.common import build_datamodule, plan_privacy, run_dir, under_privacy
from synthmed_lightning.stages.training import TrainingStage, train_stage

log = logging.getLogger(__name__)


def check_image_config(cfg: DictConfig) -> None:
    if cfg.data.preprocess.mode != "rgb":
        raise ConfigError(f"data.preprocess.mode={cfg.data.preprocess.mode}: stage=image paints RGB images, use rgb")
    multiple = 2 ** int(cfg.model.generator.num_downs)
    if cfg.data.patch_size % multiple:
        raise ConfigError(f"data.patch_size={cfg.data.patch_size} must be a multiple of 2**model.generator.num_downs={multiple}")
    if cfg.data.val_count < 1:
        raise ConfigError("stage=image needs data.val_count >= 1 (validation images for val/l1 and the sample grid)")


def _fit_or_none(model_class, samples):
    """`model_class.fit_samples(samples)`, or None (saying why) where the images cannot show it,
    e.g. a FOV too small for the rim's rings or no vessel wide enough to find the disc by."""
    try:
        return model_class.fit_samples(samples)
    except ValueError as error:
        log.warning("%s not fitted, the export goes without it: %s", model_class.__name__, error)
        return None


class ImageStage(TrainingStage):
    """pix2pix on random patches of the training images, validated on whole held-out images."""

    gan = True

    def __init__(self):
        self.loss_history = LossHistory(monitor="train/l1")

    def check(self, cfg: DictConfig) -> None:
        check_image_config(cfg)

    def datamodule(self, cfg: DictConfig):
        datamodule = build_datamodule(cfg)
        datamodule.setup("fit")
        if datamodule.fov_diameter:
            # Training patches come from images resampled to data.fov_diameter; paint the validation
            # images at that scale too (the segmenter's evaluation maps back to native size, pix2pix need not).
            datamodule.val_samples = [resize_sample(s, datamodule.fov_diameter / s.fov_diameter)
                                      for s in datamodule.val_samples]
        if datamodule.extra_sources and under_privacy(cfg):
            raise ConfigError("privacy=dp trains on the dataset's own training images: remove data.extra_train")
        return datamodule

    def model_arguments(self, cfg: DictConfig, datamodule) -> dict:
        # The training images' colour statistics, for `generate appearance=colour` (data/appearance.py).
        train = datamodule.train_samples
        appearance = AppearanceModel.fit([s.image for s in train], [s.fov for s in train])
        privacy = plan_privacy(cfg, datamodule, images=len(train), sensitivity=pix2pix_sensitivity())
        # The fits below read the real images outside DP-SGD: a private painter goes without them.
        public = not under_privacy(cfg)
        # Their background texture, noise, fall-off and sharpness, for `generate appearance=photo`.
        nuisance = NuisanceModel.fit_samples(train) if public else None
        # Their vessels' contrast ring by ring from the mask's edge, for `generate vessel_profile=true`.
        profile = VesselProfile.fit_samples(train) if public else None
        # Their FOV's edge and optic disc, which the paintings lack, for `generate fov_rim=true optic_disc=true`.
        rim = _fit_or_none(FovRim, train) if public else None
        disc = _fit_or_none(OpticDisc, train) if public else None
        arguments = {"train_fov_diameter": datamodule.train_fov_diameter, "appearance": appearance.to_dict(),
                     "nuisance": nuisance.to_dict() if nuisance else None,
                     "vessel_profile": profile.to_dict() if profile else None,
                     "fov_rim": rim.to_dict() if rim else None, "optic_disc": disc.to_dict() if disc else None,
                     "privacy": privacy}
        if not public and cfg.model.get("vessel_critic"):
            # The critic learns from the real images outside DP-SGD: a private painter goes without it.
            log.info("privacy=%s: the vessel critic is left out (model.vessel_critic=null)", cfg.privacy.mode)
            arguments["vessel_critic"] = None
        return arguments

    def callbacks(self, cfg: DictConfig, model) -> list:
        return [self.loss_history, PaintingGridWriter(run_dir(cfg) / "samples")]

    def evaluate(self, trainer, model, datamodule) -> dict:
        # A final validation at the last step (max_steps may stop mid-epoch): val/l1 and the grid of the final model.
        results = trainer.validate(model, datamodule=datamodule, verbose=False)
        return {
            "val/l1": float(results[0]["val/l1"]) if results else float("nan"),
            **self.loss_history.summary(),
            **model.privacy_spent(),
            "train/iterations": model.generator_steps,
        }


def run_image(cfg: DictConfig) -> dict:
    return train_stage(cfg, ImageStage())
