"""stage=pseudolabel: vessel masks for unlabelled fundus images, made by a trained segmenter.

MESSIDOR has no vessel masks; the paper pairs its images with masks made by a segmenter to train
Stage II. `ckpt_path=<segment checkpoint> data=folder data.root=<folder> out_dir=<dir>` runs the
segmenter over every image of the folder (`root/images/*`, with optional `root/fov/*`, or a plain
folder of images) and writes a `data=folder` dataset: images/ (PNG copies), masks/ (0/255, the
probability thresholded at the checkpoint's threshold, inside the FOV), fov/ (read, or derived
from the image), manifest.json. Other `data=` choices (drive, chase, phantom) are labelled over
their whole dataset (`all` split), ignoring their own masks.

Images are streamed one at a time, so a folder of thousands of large photographs fits in memory.
The segmenter resamples each image to the FOV scale it was trained at (see `Segmenter`).
Written by `export.DatasetWriter`: atomic, refuses an existing out_dir unless overwrite=true.
"""

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from synthmed_lightning.checkpoints import load_module
from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.data.sample import Sample, fov_diameter
from synthmed_lightning.data.streaming import folder_images, stream_folder
from synthmed_lightning.data.transforms import DEFAULT_PREPROCESS, preprocess, to_tensor_layout
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.export import DatasetWriter, sha256_file
from synthmed_lightning.models.segmenter import Segmenter
from synthmed_lightning.stages.common import run_dir
from synthmed_lightning.utils import pick_device, progress_bar, resolved_config, write_json
from synthmed_lightning.visualize import image_grid, overlay_prediction, save_png

log = logging.getLogger(__name__)

_PREVIEW = 4


def source_samples(cfg: DictConfig) -> tuple[int, Iterator[Sample]]:
    """(count, samples) of the dataset to label: folders streamed from disk, others read whole."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if data["name"] == "folder":
        if not data.get("root"):
            raise ConfigError("data.root is not set: point it at the folder of images to label")
        images, fov_dir = folder_images(Path(data["root"]))
        return len(images), stream_folder(images, fov_dir)
    samples = read_dataset({"name": data["name"], "root": data.get("root"), **(data.get("reader") or {})}, "all")
    return len(samples), iter(samples)


def check_settings(cfg: DictConfig) -> None:
    if OmegaConf.is_missing(cfg, "out_dir") or not cfg.get("out_dir"):
        raise ConfigError("stage=pseudolabel needs out_dir=<folder for the labelled dataset>")
    threshold = cfg.get("threshold")
    if threshold is not None and not 0.0 < float(threshold) < 1.0:
        raise ConfigError(f"threshold={threshold}: must be between 0 and 1 (or null for the checkpoint's)")


def run_pseudolabel(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    check_settings(cfg)
    model = load_module(Segmenter, cfg.ckpt_path, "segment")
    device = pick_device(str(cfg.device))
    model = model.to(device).eval()
    threshold = float(cfg.threshold) if cfg.get("threshold") is not None else float(model.hparams.threshold)
    prep = dict(model.hparams.preprocess or DEFAULT_PREPROCESS)
    count, samples = source_samples(cfg)
    preview, fractions = [], []

    with DatasetWriter(cfg.out_dir, overwrite=bool(cfg.overwrite)) as writer:
        with progress_bar("pseudolabel") as progress, torch.no_grad():
            task = progress.add_task("images", total=count)
            for sample in samples:
                x = torch.from_numpy(to_tensor_layout(preprocess(sample.image, **prep)))[None].to(device)
                probs = model.predict_probabilities(x, fov_diameter(sample.fov))[0, 0].float().cpu().numpy()
                mask = ((probs >= threshold) & (sample.fov > 0)).astype(np.uint8)
                writer.add(sample.stem, sample.image, mask, sample.fov)
                fractions.append(float(mask[sample.fov > 0].mean()) if sample.fov.any() else 0.0)
                if len(preview) < _PREVIEW:
                    preview.append(overlay_prediction(sample.image, mask, None, sample.fov))
                progress.advance(task)
        writer.commit({
            "mode": "pseudolabel",
            "threshold": threshold,
            "checkpoints": {"segment": {"path": str(Path(cfg.ckpt_path).absolute()), "sha256": sha256_file(cfg.ckpt_path)}},
            "config": resolved_config(cfg),
        })

    out = run_dir(cfg)
    if preview and all(p.shape == preview[0].shape for p in preview):
        save_png(out / "samples" / "latest.png", image_grid(preview, columns=min(4, len(preview))))
    metrics = {
        "pseudolabel/count": count,
        "pseudolabel/vessel_fraction": float(np.mean(fractions)),
        "pseudolabel/threshold": threshold,
        "time/total_s": time.perf_counter() - start,
    }
    write_json(out / "metrics.json", metrics)
    log.info("Labelled %d images into %s", count, cfg.out_dir)
    return metrics
