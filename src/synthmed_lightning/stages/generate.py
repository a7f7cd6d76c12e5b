"""stage=generate: export a synthetic dataset (SPEC.md, interface contract 4).

Dual GAN (the paper's pipeline): `mask_ckpt=<stage=mask checkpoint> image_ckpt=<stage=image checkpoint>`.
Stage I draws an S x S vessel mask and FOV per sample; they are mapped to the export size by the
inverse of Stage I's square padding (`mask_data.from_square`: resize the square to max(H, W),
crop the centre; linear + threshold at 0.5 so thin vessels survive) and Stage II paints the
fundus image at that full resolution. With `appearance=colour` (default) each painted image then
gets its own global colour, drawn from the training images' statistics (`data/appearance.py`).
Single GAN (baseline): `single_ckpt=<stage=single checkpoint>`: image and mask of the joint
generator, mapped to the export size the same way (the image linearly).

Sample i is drawn with a seed derived from (seed, i): the same seed gives byte-identical files,
and sample i does not depend on `num_samples` or `batch_size`. Vessel pixels outside the FOV are
dropped and the image is black there. Written by `export.DatasetWriter` (atomic, manifest.json).
"""

import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from synthmed_lightning.checkpoints import load_module
from synthmed_lightning.data.appearance import AppearanceModel, transfer_colour
from synthmed_lightning.data.mask_data import from_square
from synthmed_lightning.data.sample import fov_diameter
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.export import DatasetWriter, sha256_file
from synthmed_lightning.stages.common import run_dir
from synthmed_lightning.utils import pick_device, progress_bar, resolved_config, write_json
from synthmed_lightning.visualize import image_grid, save_png, to_uint8

log = logging.getLogger(__name__)

# The export size when neither the settings nor the checkpoint give one: DRIVE's native size.
DRIVE_SIZE = (584, 565)
_GRID_SAMPLES = 8
# Relative FOV-scale difference between export and Stage II training above which to warn.
_SCALE_TOLERANCE = 0.15
_GRID_SIDE = 256
# dual GAN: each image gets sampled channel means (colour), means and spreads, or pix2pix's own colour.
APPEARANCE_MODES = ("colour", "colour_contrast", "painted")


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of an export with `seed`: independent streams per sample."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(index)]).generate_state(1)[0])


class DualGenerator:
    """Stage I masks painted by Stage II."""

    mode = "dual"

    def __init__(self, mask_ckpt: str, image_ckpt: str, device: torch.device, appearance: str):
        from synthmed_lightning.models.image_gan import ImageGAN
        from synthmed_lightning.models.mask_gan import MaskGAN

        self.mask_gan = load_module(MaskGAN, mask_ckpt, "mask").to(device).eval()
        self.image_gan = load_module(ImageGAN, image_ckpt, "image").to(device).eval()
        self.checkpoints = {"mask": mask_ckpt, "image": image_ckpt}
        self.source_size = self.mask_gan.hparams.get("source_size")
        self.train_fov_diameter = self.image_gan.hparams.get("train_fov_diameter")
        self.appearance, self.contrast = None, appearance == "colour_contrast"
        if appearance != "painted":
            stats = self.image_gan.hparams.get("appearance")
            if stats:
                self.appearance = AppearanceModel.from_dict(stats)
            else:
                log.warning("%s records no colour statistics (trained before they were kept): every image keeps "
                            "the painted appearance", image_ckpt)

    def __call__(self, seeds: list[int], height: int, width: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        masks, fovs = [], []
        for seed in seeds:
            sample = self.mask_gan.generate(1, seed)
            masks.append(from_square(_binary(sample["mask"]), height, width, binary=True))
            fovs.append(from_square(_binary(sample["fov"]), height, width, binary=True))
        fov = np.stack(fovs)
        mask = np.stack(masks) & fov
        as_tensor = lambda a: torch.from_numpy(a.astype(np.float32))[:, None]  # noqa: E731
        images = [to_uint8(image) for image in self.image_gan.paint(as_tensor(mask), as_tensor(fov))]
        if self.appearance is not None:  # pix2pix paints one appearance: give each image its own
            images = [transfer_colour(image, f, self.appearance.sample(seed), self.contrast)
                      for image, f, seed in zip(images, fov, seeds)]
        return list(zip(images, mask, fov))


class SingleGenerator:
    """The single-GAN baseline: image and mask from one generator."""

    mode = "single"

    def __init__(self, single_ckpt: str, device: torch.device):
        from synthmed_lightning.models.single_gan import SingleGAN

        self.single_gan = load_module(SingleGAN, single_ckpt, "single").to(device).eval()
        self.checkpoints = {"single": single_ckpt}
        self.source_size = self.single_gan.hparams.get("source_size")
        self.train_fov_diameter = None

    def __call__(self, seeds: list[int], height: int, width: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for seed in seeds:
            sample = self.single_gan.generate(1, seed)
            fov = from_square(_binary(sample["fov"]), height, width, binary=True)
            mask = from_square(_binary(sample["mask"]), height, width, binary=True) & fov
            image = from_square(to_uint8(sample["image"][0]), height, width, binary=False)
            out.append((image * fov[..., None], mask, fov))
        return out


def _binary(tensor: torch.Tensor) -> np.ndarray:
    """(1, 1, S, S) float {0, 1} -> (S, S) uint8 {0, 1}."""
    return (tensor[0, 0].detach().float().cpu().numpy() > 0.5).astype(np.uint8)


def build_generator(cfg: DictConfig, device: torch.device):
    dual = [cfg.get("mask_ckpt"), cfg.get("image_ckpt")]
    single = cfg.get("single_ckpt")
    if single and any(dual):
        raise ConfigError("give either mask_ckpt=... image_ckpt=... (dual GAN) or single_ckpt=... (single GAN), not both")
    if single:
        return SingleGenerator(str(single), device)
    if all(dual):
        return DualGenerator(str(dual[0]), str(dual[1]), device, str(cfg.appearance))
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


def check_settings(cfg: DictConfig) -> None:
    for key in ("out_dir", "num_samples"):
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) is None:
            raise ConfigError(f"stage=generate needs {key}=<{'folder' if key == 'out_dir' else 'count'}>")
    if not isinstance(cfg.num_samples, int) or isinstance(cfg.num_samples, bool) or cfg.num_samples < 1:
        raise ConfigError(f"num_samples={cfg.num_samples}: must be a positive integer")
    if cfg.appearance not in APPEARANCE_MODES:
        raise ConfigError(f"appearance={cfg.appearance}: must be one of {', '.join(APPEARANCE_MODES)}")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError(f"batch_size={cfg.batch_size}: must be a positive integer")


def run_generate(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    check_settings(cfg)
    device = pick_device(str(cfg.device))
    generator = build_generator(cfg, device)
    height, width = export_size(cfg, generator.source_size)
    n, seed = int(cfg.num_samples), int(cfg.seed)
    digits = max(4, len(str(n - 1)))
    preview, vessel_fractions = [], []

    scale_warned = False
    with DatasetWriter(cfg.out_dir, overwrite=bool(cfg.overwrite)) as writer:
        checkpoints = {name: {"path": str(Path(path).absolute()), "sha256": sha256_file(path)}
                       for name, path in generator.checkpoints.items()}
        with progress_bar(f"generate ({generator.mode})") as progress:
            task = progress.add_task("samples", total=n)
            for first in range(0, n, int(cfg.batch_size)):
                indices = range(first, min(n, first + int(cfg.batch_size)))
                for i, (image, mask, fov) in zip(indices, generator([sample_seed(seed, i) for i in indices], height, width)):
                    writer.add(f"{i:0{digits}d}", image, mask, fov)
                    if not scale_warned and generator.train_fov_diameter and fov.any():
                        scale_warned = True
                        ratio = fov_diameter(fov) / generator.train_fov_diameter
                        if abs(ratio - 1) > _SCALE_TOLERANCE:
                            log.warning("The export's FOV is %.0f px across but Stage II learned at %.0f px: painted vessel "
                                        "texture will be %.1fx too %s (set height/width to the training data's size)",
                                        fov_diameter(fov), generator.train_fov_diameter, max(ratio, 1 / ratio),
                                        "fine" if ratio > 1 else "coarse")
                    vessel_fractions.append(float(mask[fov > 0].mean()) if fov.any() else 0.0)
                    if len(preview) < _GRID_SAMPLES:
                        preview.append((image, mask * 255))
                progress.advance(task, len(indices))
        writer.commit({
            "mode": generator.mode,
            "seed": seed,
            "num_samples": n,
            "height": height,
            "width": width,
            "checkpoints": checkpoints,
            "config": resolved_config(cfg),
        })

    out = run_dir(cfg)
    scale = min(1.0, _GRID_SIDE / max(height, width))
    tiles = [_shrink(t, scale) for pair in preview for t in pair]
    save_png(out / "samples" / "latest.png", image_grid(tiles, columns=4))
    metrics = {
        "generate/count": n,
        "generate/height": height,
        "generate/width": width,
        "generate/vessel_fraction": float(np.mean(vessel_fractions)),
        "time/total_s": time.perf_counter() - start,
        "time/s_per_sample": (time.perf_counter() - start) / n,
    }
    write_json(out / "metrics.json", metrics)
    log.info("Wrote %d synthetic samples (%dx%d, %s GAN) to %s; its manifest.json has sha256 %s (publish it with the data: "
             "stage=verify synthetic_dir=... manifest_sha256=... checks both)", n, width, height, generator.mode, cfg.out_dir,
             writer.manifest_sha256)
    return metrics


def _shrink(tile: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return tile
    import cv2

    h, w = tile.shape[:2]
    return cv2.resize(tile, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
