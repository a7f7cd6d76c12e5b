"""stage=generate: export a synthetic dataset (the export contract of docs/design.md).

Dual GAN (the paper's pipeline): `mask_ckpt=<stage=mask checkpoint> image_ckpt=<stage=image checkpoint>`.
Stage I draws an S x S vessel mask and FOV per sample; they are mapped to the export size by the
inverse of Stage I's square padding (`mask_data.from_square`: resize the square to max(H, W),
crop the centre; linear + threshold at 0.5 so thin vessels survive) and Stage II paints the
fundus image at that full resolution. With `appearance=colour` (default) each painted image then
gets its own global colour, drawn from the training images' statistics (`data/appearance.py`).
Single GAN (baseline): `single_ckpt=<stage=single checkpoint>`: image and mask of the single
generator, mapped to the export size the same way (the image linearly).

Three steps: load the generators (`synthesis.build_generator`), draw the samples (`draw`), write
them (`export.DatasetWriter`: atomic, manifest.json) with a preview grid and `metrics.json`.
The same seed gives byte-identical files (`synthesis.sample_seed`). Vessel pixels outside the
FOV are dropped and the image is black there.
"""

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf

from synthmed_lightning.data.sample import fov_diameter
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.export import DatasetWriter, sha256_file
from synthmed_lightning.stages.common import run_dir
from synthmed_lightning.synthesis import APPEARANCE_MODES, build_generator, export_size, sample_seed
from synthmed_lightning.utils import pick_device, progress_bar, resolved_config, write_json
from synthmed_lightning.visualize import image_grid, save_png

log = logging.getLogger(__name__)

_GRID_SAMPLES = 8
_GRID_SIDE = 256
# Relative FOV-scale difference between export and Stage II training above which to warn.
_SCALE_TOLERANCE = 0.15


@dataclass(frozen=True)
class ExportSettings:
    """What `conf/stage/generate.yaml` sets, checked."""

    out_dir: Path
    num_samples: int
    seed: int
    batch_size: int
    overwrite: bool

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "ExportSettings":
        for key in ("out_dir", "num_samples"):
            if OmegaConf.is_missing(cfg, key) or cfg.get(key) is None:
                raise ConfigError(f"stage=generate needs {key}=<{'folder' if key == 'out_dir' else 'count'}>")
        for key in ("num_samples", "batch_size"):
            value = cfg.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{key}={value}: must be a positive integer")
        if cfg.appearance not in APPEARANCE_MODES:
            raise ConfigError(f"appearance={cfg.appearance}: must be one of {', '.join(APPEARANCE_MODES)}")
        return cls(Path(cfg.out_dir), int(cfg.num_samples), int(cfg.seed), int(cfg.batch_size), bool(cfg.overwrite))


def draw(generator, settings: ExportSettings, height: int, width: int) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(index, image, mask, FOV) of every sample, in batches of `batch_size`, with a progress bar."""
    n = settings.num_samples
    with progress_bar(f"generate ({generator.mode})") as progress:
        task = progress.add_task("samples", total=n)
        for first in range(0, n, settings.batch_size):
            indices = range(first, min(n, first + settings.batch_size))
            yield from ((i, *sample) for i, sample in
                        zip(indices, generator(indices, [sample_seed(settings.seed, i) for i in indices], height, width)))
            progress.advance(task, len(indices))


def _warn_scale_mismatch(fov: np.ndarray, train_fov_diameter: float) -> None:
    ratio = fov_diameter(fov) / train_fov_diameter
    if abs(ratio - 1) > _SCALE_TOLERANCE:
        log.warning("The export's FOV is %.0f px across but Stage II learned at %.0f px: painted vessel texture will "
                    "be %.1fx too %s (set height/width to the training data's size)", fov_diameter(fov),
                    train_fov_diameter, max(ratio, 1 / ratio), "fine" if ratio > 1 else "coarse")


def run_generate(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    settings = ExportSettings.from_config(cfg)
    generator = build_generator(cfg, pick_device(str(cfg.device)))
    height, width = export_size(cfg, generator.source_size)
    digits = max(4, len(str(settings.num_samples - 1)))
    preview, vessel_fractions = [], []
    with DatasetWriter(settings.out_dir, overwrite=settings.overwrite) as writer:
        checkpoints = {name: {"path": str(Path(path).absolute()), "sha256": sha256_file(path)}
                       for name, path in generator.checkpoints.items()}
        for i, image, mask, fov in draw(generator, settings, height, width):
            writer.add(f"{i:0{digits}d}", image, mask, fov)
            if i == 0 and generator.train_fov_diameter and fov.any():
                _warn_scale_mismatch(fov, generator.train_fov_diameter)
            vessel_fractions.append(float(mask[fov > 0].mean()) if fov.any() else 0.0)
            if len(preview) < _GRID_SAMPLES:
                preview.append((image, mask * 255))
        writer.commit({"mode": generator.mode, "seed": settings.seed, "num_samples": settings.num_samples,
                       "height": height, "width": width, "checkpoints": checkpoints, "config": resolved_config(cfg)})

    out = run_dir(cfg)
    scale = min(1.0, _GRID_SIDE / max(height, width))
    save_png(out / "samples" / "latest.png", image_grid([_shrink(t, scale) for pair in preview for t in pair], columns=4))
    seconds = time.perf_counter() - start
    metrics = {"generate/count": settings.num_samples, "generate/height": height, "generate/width": width,
               "generate/vessel_fraction": float(np.mean(vessel_fractions)), "time/total_s": seconds,
               "time/s_per_sample": seconds / settings.num_samples}
    write_json(out / "metrics.json", metrics)
    log.info("Wrote %d synthetic samples (%dx%d, %s GAN) to %s; its manifest.json has sha256 %s (publish it with the "
             "data: stage=verify synthetic_dir=... manifest_sha256=... checks both)", settings.num_samples, width, height,
             generator.mode, settings.out_dir, writer.manifest_sha256)
    return metrics


def _shrink(tile: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return tile
    h, w = tile.shape[:2]
    return cv2.resize(tile, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
