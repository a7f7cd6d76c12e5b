"""Drawing synthetic (image, mask, FOV) samples from trained generators: the dual GAN (Stage I
masks painted by Stage II) or the single-GAN baseline. `stage=generate` writes what they draw.

Sample i is drawn with a seed derived from (seed, i): the same seed gives the same arrays, and
sample i does not depend on how many are drawn or in which batches.
"""

import logging

import numpy as np
import torch
from omegaconf import DictConfig

from synthmed_lightning.checkpoints import load_module
from synthmed_lightning.data.appearance import AppearanceModel, transfer_colour
from synthmed_lightning.data.fov_rim import FovRim
from synthmed_lightning.data.mask_data import fov_to_native, from_square
from synthmed_lightning.data.nuisance import NuisanceModel
from synthmed_lightning.data.optic_disc import OpticDisc
from synthmed_lightning.data.readers import dataset_spec, read_dataset
from synthmed_lightning.data.sample import fov_diameter
from synthmed_lightning.data.vessel_profile import VesselProfile
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.models.image_gan import PAINT_STATISTICS, ImageGAN
from synthmed_lightning.models.mask_gan import MaskGAN
from synthmed_lightning.models.single_gan import SingleGAN
from synthmed_lightning.utils import to_primitive
from synthmed_lightning.visualize import to_uint8

log = logging.getLogger(__name__)

# The export size when neither the settings nor the checkpoint give one: DRIVE's native size.
DRIVE_SIZE = (584, 565)
# dual GAN: each image gets sampled channel means (colour), means and spreads, pix2pix's own colour,
# or the sampled colour plus the real photographs' texture, noise, fall-off and blur (photo).
APPEARANCE_MODES = ("colour", "colour_contrast", "painted", "photo")
# stage=generate's switches for what Stage II's paintings are given from the photographs (Painter).
PHOTO_CORRECTIONS = ("vessel_profile", "fov_rim", "optic_disc")
# Where the dual pipeline's masks come from: Stage I, or the real training split (Stage II alone).
MASK_SOURCES = ("gan", "real")


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of an export with `seed`: independent streams per sample."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(index)]).generate_state(1)[0])


class Painter:
    """Stage II, with each painting's own global appearance: pix2pix paints one look for every mask,
    so with `appearance=colour` each image then gets a colour drawn from the training images'
    statistics kept in the checkpoint (`data/appearance.py`); with `photo` also the photographs'
    background texture, noise, fall-off and blur (`data/nuisance.py`), which the paintings lack.
    With `optic_disc`, each painting gets the photographs' bright disc where its thick vessels meet
    (`data/optic_disc.py`); with `vessel_profile`, its vessel contrast moved ring by ring to the
    photographs' (`data/vessel_profile.py`: pix2pix paints vessels darker and wider than their
    masks); with `fov_rim`, the photographs' sharp FOV edge instead of a soft fall-off
    (`data/fov_rim.py`). Each is fitted on the training photographs and kept in the checkpoint."""

    def __init__(self, image_ckpt: str, device: torch.device, appearance: str, paint_statistics: str | None = None,
                 *, vessel_profile: bool = False, fov_rim: bool = False, optic_disc: bool = False):
        self.image_ckpt = image_ckpt
        self.image_gan = load_module(ImageGAN, image_ckpt, "image").to(device).eval()
        if paint_statistics is not None:  # how its BatchNorm paints, overriding what it was trained with
            self.image_gan.hparams.paint_statistics = paint_statistics
        self.train_fov_diameter = self.image_gan.hparams.get("train_fov_diameter")
        self.contrast = appearance == "colour_contrast"
        self.nuisance = self._statistics("nuisance", NuisanceModel, image_ckpt, "appearance=photo shifts the colour only") \
            if appearance == "photo" else None
        self.appearance = self._statistics("appearance", AppearanceModel, image_ckpt, "every image keeps the painted "
                                           "appearance") if appearance != "painted" else None
        self.optic_disc = self._statistics("optic_disc", OpticDisc, image_ckpt, "the paintings get no optic disc") \
            if optic_disc else None
        self.vessel_profile = self._statistics("vessel_profile", VesselProfile, image_ckpt, "vessels keep the painted "
                                               "contrast") if vessel_profile else None
        self.fov_rim = self._statistics("fov_rim", FovRim, image_ckpt, "the FOV keeps its painted edge") \
            if fov_rim else None

    def _statistics(self, key: str, model_class, image_ckpt: str, fallback: str):
        """The statistics model the checkpoint keeps under `key`, or None (saying so) for an older one."""
        stats = self.image_gan.hparams.get(key)
        if not stats:
            log.warning("%s records no %s statistics (trained before they were kept, or with privacy=dp): %s",
                        image_ckpt, key, fallback)
        return model_class.from_dict(stats) if stats else None

    def __call__(self, mask: np.ndarray, fov: np.ndarray, seeds: list[int]) -> list[np.ndarray]:
        """RGB uint8 paintings of (n, H, W) uint8 masks inside their FOVs, one appearance per seed."""
        as_tensor = lambda a: torch.from_numpy(a.astype(np.float32))[:, None]  # noqa: E731
        images = [to_uint8(image) for image in self.image_gan.paint(as_tensor(mask), as_tensor(fov))]
        if self.appearance is not None:
            images = [transfer_colour(image, f, self.appearance.sample(seed), self.contrast)
                      for image, f, seed in zip(images, fov, seeds)]
        if self.nuisance is not None:
            images = [self.nuisance.apply(image, f, seed, mask=m) for image, f, m, seed in zip(images, fov, mask, seeds)]
        diameters = [fov_diameter(f) for f in fov]  # the corrections' rings scale with it
        if self.optic_disc is not None:  # before the vessel profile, which follows the background's brightness
            images = [self.optic_disc.apply(image, m, f, seed, d)
                      for image, f, m, seed, d in zip(images, fov, mask, seeds, diameters)]
        if self.vessel_profile is not None:
            images = [self.vessel_profile.apply(image, m, f, seed, d)
                      for image, f, m, seed, d in zip(images, fov, mask, seeds, diameters)]
        if self.fov_rim is not None:
            images = [self.fov_rim.apply(image, f, d) for image, f, d in zip(images, fov, diameters)]
        return images


class DualGenerator:
    """Stage I masks painted by Stage II. The masks come at the export size from
    `MaskGAN.generate_native`: drawn by Stage I's refiner when the checkpoint has one, else the
    square samples mapped back with `from_square`."""

    mode = "dual"

    def __init__(self, mask_ckpt: str, painter: Painter, device: torch.device):
        self.mask_gan = load_module(MaskGAN, mask_ckpt, "mask").to(device).eval()
        self.painter = painter
        self.checkpoints = {"mask": mask_ckpt, "image": painter.image_ckpt}
        self.source_size = self.mask_gan.hparams.get("source_size")
        self.train_fov_diameter = self.painter.train_fov_diameter

    def __call__(self, indices: range, seeds: list[int], height: int, width: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        samples = [self.mask_gan.generate_native(1, seed, height, width) for seed in seeds]
        fov = np.concatenate([sample["fov"] for sample in samples])
        mask = np.concatenate([sample["mask"] for sample in samples]) & fov
        return list(zip(self.painter(mask, fov, seeds), mask, fov))


class RealMaskPainter:
    """Stage II painting the real training masks instead of Stage I's: sample i paints mask
    i mod N with its own appearance draw. Set against the real data and the dual GAN, it splits the
    synthetic data's cost between the painter and Stage I (the study's `stage2_real_masks`).
    Its masks are patients' masks: a set for measuring, not for publishing."""

    mode = "stage2_real_masks"

    def __init__(self, painter: Painter, real: list):
        if not real:
            raise ConfigError("mask_source=real: the dataset's training split has no masks to paint")
        self.painter = painter
        self.real = real
        self.checkpoints = {"image": painter.image_ckpt}
        self.source_size = list(real[0].mask.shape)
        self.train_fov_diameter = self.painter.train_fov_diameter

    def __call__(self, indices: range, seeds: list[int], height: int, width: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for index, seed in zip(indices, seeds):  # one at a time: real masks may differ in size
            sample = self.real[index % len(self.real)]
            fov = (sample.fov > 0).astype(np.uint8)[None]
            mask = (sample.mask > 0).astype(np.uint8)[None] & fov
            out.append((self.painter(mask, fov, [seed])[0], mask[0], fov[0]))
        return out


class SingleGenerator:
    """The single-GAN baseline: image and mask from one generator."""

    mode = "single"

    def __init__(self, single_ckpt: str, device: torch.device):
        self.single_gan = load_module(SingleGAN, single_ckpt, "single").to(device).eval()
        self.checkpoints = {"single": single_ckpt}
        self.source_size = self.single_gan.hparams.get("source_size")
        self.train_fov_diameter = None

    def __call__(self, indices: range, seeds: list[int], height: int, width: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for seed in seeds:
            sample = self.single_gan.generate(1, seed)
            fov = fov_to_native(_binary(sample["fov"]), height, width)
            mask = from_square(_binary(sample["mask"]), height, width, binary=True) & fov
            image = from_square(to_uint8(sample["image"][0]), height, width, binary=False)
            out.append((image * fov[..., None], mask, fov))
        return out


def _binary(tensor: torch.Tensor) -> np.ndarray:
    """(1, 1, S, S) float {0, 1} -> (S, S) uint8 {0, 1}."""
    return (tensor[0, 0].detach().float().cpu().numpy() > 0.5).astype(np.uint8)


def build_generator(cfg: DictConfig, device: torch.device):
    """The generator `stage=generate`'s settings name: dual GAN, single GAN, or Stage II on real masks."""
    dual = [cfg.get("mask_ckpt"), cfg.get("image_ckpt")]
    single = cfg.get("single_ckpt")
    source = cfg.get("mask_source", "gan")
    if source not in MASK_SOURCES:
        raise ConfigError(f"mask_source={source}: must be one of {', '.join(MASK_SOURCES)}")
    paint_statistics = cfg.get("paint_statistics")
    if paint_statistics is not None and paint_statistics not in PAINT_STATISTICS:
        raise ConfigError(f"paint_statistics={paint_statistics}: must be one of {', '.join(PAINT_STATISTICS)}, or null "
                          "(as the painter was trained)")
    corrections = {}  # what the photographs have and the paintings lack, each fitted by stage=image
    for key in PHOTO_CORRECTIONS:
        corrections[key] = cfg.get(key, False)
        if not isinstance(corrections[key], bool):
            raise ConfigError(f"{key}={corrections[key]}: must be true or false")
    painter = lambda: Painter(str(dual[1]), device, str(cfg.appearance), paint_statistics, **corrections)  # noqa: E731
    if single and any(dual):
        raise ConfigError("give either mask_ckpt=... image_ckpt=... (dual GAN) or single_ckpt=... (single GAN), not both")
    if source == "real":
        if single or dual[0] or not dual[1]:
            raise ConfigError("mask_source=real paints the dataset's own training masks: give image_ckpt=<stage=image "
                              "checkpoint> and data=... (no mask_ckpt or single_ckpt)")
        if cfg.get("height") is not None or cfg.get("width") is not None:
            raise ConfigError("mask_source=real paints each mask at its native size: leave height and width unset")
        data = to_primitive(cfg.data)
        real = read_dataset(dataset_spec(data["name"], data.get("root"), data.get("reader")), "train")
        return RealMaskPainter(painter(), real)
    if single:
        return SingleGenerator(str(single), device)
    if all(dual):
        return DualGenerator(str(dual[0]), painter(), device)
    if any(dual):
        missing = "image_ckpt" if dual[0] else "mask_ckpt"
        raise ConfigError(f"stage=generate with the dual GAN needs {missing}=<checkpoint> as well")
    raise ConfigError("stage=generate needs mask_ckpt=<stage=mask checkpoint> image_ckpt=<stage=image checkpoint>, "
                      "or single_ckpt=<stage=single checkpoint>")


def export_size(cfg: DictConfig, source_size) -> tuple[int, int]:
    """height/width settings; unset, the native size of the data the generator learned from; else DRIVE's."""
    default = tuple(int(v) for v in source_size) if source_size else DRIVE_SIZE
    height = int(cfg.height) if cfg.get("height") is not None else default[0]
    width = int(cfg.width) if cfg.get("width") is not None else default[1]
    if height < 16 or width < 16:
        raise ConfigError(f"height={height} width={width}: the export needs at least 16 x 16 pixels")
    return height, width
