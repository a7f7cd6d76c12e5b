"""Privacy audit of an exported synthetic set (`stage=audit`, or `run_audit` from Python).

The question: does the synthetic set give away the real training images? Each image becomes a
vector in up to two spaces, and `metrics/privacy.py` measures in each:
- pixel: the image inside its FOV, padded to a square, area-downsampled to `pixel_size` (64) px,
  each colour channel standardised inside the FOV (zero mean, unit variance; 0 outside). The
  standardisation makes a re-coloured or brightened copy still a copy: on DRIVE, raw pixels found
  1 of 20 training images that had been brightened, noised, blurred and shifted by 4 px; these
  found 8 (and the membership attack's AUC rose from 0.77 to 0.96).
- feature: the first two levels of the U-Net encoder of a trained `segment` checkpoint
  (`segment_ckpt`), each average-pooled to a 4 x 4 grid, every dimension z-scored with the real
  training images' statistics: what a vessel segmenter sees of the vessel layout. On the same
  perturbed copies it found 18 of 20 (AUC 0.97; the deepest level alone found 6). Images enter at
  `feature_size` px (default: the real training images' longer side, the scale the segmenter
  learned at). Without `segment_ckpt` this space is skipped and the report says so: a random-init
  encoder was measured and found nearly blind (0 to 4 of the 20 perturbed copies).

With `flips` (default) every real image also enters mirrored left-right, upside down and rotated by
180 degrees (the GANs train with flips, and a mirrored copy is still a copy): two images are as far
apart as their closest views, for the near-copy threshold too.

Training set: the real dataset's train split (what the generators learned from); held-out set:
its test split (or another dataset). Writes `audit.json` and, for the `worst` synthetic images
closest to being copies (smallest distance / near-copy threshold over the spaces),
`nearest/worst_XX.png`: the synthetic image beside its nearest training image (unflipped).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from synthmed_lightning.data.io import read_rgb
from synthmed_lightning.checkpoints import load_module
from synthmed_lightning.data.mask_data import to_square
from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.data.sample import Sample
from synthmed_lightning.data.streaming import folder_images, stream_folder
from synthmed_lightning.data.transforms import DEFAULT_PREPROCESS, preprocess, to_tensor_layout
from synthmed_lightning.errors import ConfigError, DataError
from synthmed_lightning.export import MANIFEST, check_export, sha256_file
from synthmed_lightning.metrics.privacy import nearest_neighbours, privacy_report
from synthmed_lightning.models.segmenter import Segmenter
from synthmed_lightning.utils import write_json
from synthmed_lightning.visualize import image_grid, save_png

log = logging.getLogger(__name__)

_GRID = 4    # each encoder level is average-pooled to GRID x GRID: coarse layout, not just "how much vessel"
_LEVELS = 2  # encoder levels used (finest first): measured best on DRIVE, see the module docstring


def _square(sample: Sample, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The image (black outside the FOV) and its FOV, padded to a square and area-resized to size x size."""
    image = to_square(sample.image * (sample.fov[..., None] > 0))
    fov = to_square(sample.fov.astype(np.float32))
    return (cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA),
            cv2.resize(fov, (size, size), interpolation=cv2.INTER_AREA) > 0.5)


def pixel_features(sample: Sample, size: int = 64) -> np.ndarray:
    """(size * size * 3,) float32: the downsampled image, each channel standardised inside the FOV, 0 outside."""
    image, fov = _square(sample, size)
    image = image.astype(np.float32)
    if fov.any():
        inside = image[fov]
        image = np.where(fov[..., None], (image - inside.mean(axis=0)) / (inside.std(axis=0) + 1.0), 0.0)
    return image.astype(np.float32).ravel()


class EncoderFeatures:
    """The first `_LEVELS` encoder levels of a trained `segment` checkpoint's U-Net, as a feature extractor."""

    def __init__(self, segment_ckpt: str, device: str = "cpu"):
        model = load_module(Segmenter, segment_ckpt, "segment")
        self.net = model.net
        if not all(hasattr(self.net, a) for a in ("encode", "size_multiple")):
            raise ConfigError(f"segment_ckpt={segment_ckpt}: its network {type(self.net).__name__} has no U-Net encoder")
        self.device = torch.device(device)
        self.net = self.net.to(self.device).eval()
        self.preprocess = dict(model.hparams.preprocess or DEFAULT_PREPROCESS)
        self.description = (f"U-Net encoder levels 0-{_LEVELS - 1} of {Path(segment_ckpt).absolute()} "
                            f"(sha256 {sha256_file(segment_ckpt)})")

    @torch.no_grad()
    def __call__(self, sample: Sample, size: int) -> np.ndarray:
        size = -(-size // self.net.size_multiple) * self.net.size_multiple
        image, _ = _square(sample, size)
        x = torch.from_numpy(to_tensor_layout(preprocess(image, **self.preprocess)))[None].to(self.device)
        levels = [F.adaptive_avg_pool2d(level, _GRID).flatten() for level in self.net.encode(x, _LEVELS)]
        return torch.cat(levels).float().cpu().numpy()


def flipped_views(sample: Sample) -> list[Sample]:
    """The sample as is, mirrored left-right, upside down, and both (a 180-degree rotation)."""
    def flip(a, axes):
        return np.ascontiguousarray(np.flip(a, axes)) if axes else a
    return [Sample(image=flip(sample.image, axes), mask=None if sample.mask is None else flip(sample.mask, axes),
                   fov=flip(sample.fov, axes), stem=sample.stem) for axes in ((), (1,), (0,), (0, 1))]


@dataclass(frozen=True)
class AuditSettings:
    """How the audit measures (`conf/stage/audit.yaml`'s `audit:` block explains each)."""

    pixel_size: int = 64
    feature_size: int | None = None
    near_copy_percentile: float = 5.0
    flips: bool = True
    worst: int = 8
    device: str = "cpu"

    def __post_init__(self):
        if self.pixel_size < 4 or self.worst < 0:
            raise ConfigError(f"audit.pixel_size={self.pixel_size} must be >= 4 and audit.worst={self.worst} >= 0")


@dataclass
class AuditData:
    """The three image sets an audit compares: real training images (members), real held-out images
    (non-members) and the synthetic export (streamed from disk)."""

    train: list[Sample]
    held_out: list[Sample]
    synthetic_paths: list[Path]
    synthetic: Iterable[Sample]


def load_audit_data(synthetic_dir: Path, real: dict, holdout: dict | None, holdout_split: str,
                    manifest_sha256: str | None) -> AuditData:
    """The export (verified against its manifest when it has one) and the real sets."""
    if (synthetic_dir / MANIFEST).is_file():
        check_export(synthetic_dir, manifest_sha256)  # never audit (and publish) a set that changed since export
    elif synthetic_dir.is_dir():
        log.warning("%s has no %s: auditing it unverified", synthetic_dir, MANIFEST)
    else:
        raise DataError(f"synthetic_dir={synthetic_dir}: folder not found")
    train, held_out = read_dataset(real, "train"), read_dataset(holdout or real, holdout_split)
    if len(train) < 2 or not held_out:
        raise DataError(f"the audit needs >= 2 training and >= 1 held-out real images, got {len(train)} and {len(held_out)}")
    images, fov_dir = folder_images(synthetic_dir)
    return AuditData(train, held_out, images, stream_folder(images, fov_dir))


def feature_spaces(settings: AuditSettings, train: list[Sample], segment_ckpt: str | None):
    """({space: sample -> vector}, the encoder or None, the feature space's input size in px)."""
    extractors = {"pixel": partial(pixel_features, size=settings.pixel_size)}
    encoder = EncoderFeatures(segment_ckpt, settings.device) if segment_ckpt else None
    size = int(settings.feature_size or max(max(s.image.shape[:2]) for s in train))
    if encoder is not None:
        extractors["feature"] = partial(encoder, size=size)
    else:
        log.warning("audit: no segment_ckpt=<stage=segment checkpoint> given: the feature space is skipped, "
                    "only pixels are compared")
    return extractors, encoder, size


def embed(extractors: dict, samples: Iterable[Sample], views: bool = False) -> dict[str, np.ndarray]:
    """Per space (n, 1, d), or (n, 4, d) with the flipped views of every image."""
    rows = {space: [] for space in extractors}
    for sample in samples:
        group = flipped_views(sample) if views else [sample]
        for space, extract in extractors.items():
            rows[space].append(np.stack([extract(v) for v in group]))
    return {space: np.stack(r) for space, r in rows.items()}


def run_audit(synthetic_dir: str | Path, real: dict, out_dir: str | Path | None = None,
              settings: AuditSettings = AuditSettings(), *, holdout: dict | None = None, holdout_split: str = "test",
              segment_ckpt: str | None = None, manifest_sha256: str | None = None) -> dict:
    """Audit `synthetic_dir` (an export) against `real` (a dataset spec, e.g. {"name": "drive", "root": ...}):
    its train split is the training set, `holdout` (default: `real`) split `holdout_split` the held-out set.
    Returns the report (also `out_dir/audit.json`, with `out_dir/nearest/worst_XX.png`, when out_dir is given).
    """
    synthetic_dir = Path(synthetic_dir)
    data = load_audit_data(synthetic_dir, real, holdout, holdout_split, manifest_sha256)
    extractors, encoder, size = feature_spaces(settings, data.train, segment_ckpt)
    sets = {"train": embed(extractors, data.train, settings.flips),
            "holdout": embed(extractors, data.held_out, settings.flips)}
    _check_disjoint(sets["train"]["pixel"], sets["holdout"]["pixel"])
    sets["synthetic"] = embed(extractors, data.synthetic)
    if "feature" in extractors:  # z-score every dimension with the training images' statistics
        reference = sets["train"]["feature"].reshape(-1, sets["train"]["feature"].shape[-1])
        mean, std = reference.mean(axis=0), reference.std(axis=0) + 1e-6
        for values in sets.values():
            values["feature"] = (values["feature"] - mean) / std
    log.info("audit: %d synthetic, %d training, %d held-out images", len(data.synthetic_paths), len(data.train),
             len(data.held_out))

    spaces = {space: privacy_report(sets["synthetic"][space], sets["train"][space], sets["holdout"][space],
                                    settings.near_copy_percentile) for space in extractors}
    report = {
        "synthetic_dir": str(synthetic_dir.absolute()),
        "synthetic_count": len(data.synthetic_paths),
        "real": dict(real),
        "holdout": {**(holdout or real), "split": holdout_split},
        "train_count": len(data.train),
        "holdout_count": len(data.held_out),
        "feature_encoder": encoder.description if encoder else "none: no segment_ckpt given, feature space skipped",
        "settings": {"pixel_size": settings.pixel_size, "feature_size": size,
                     "near_copy_percentile": settings.near_copy_percentile, "flips": settings.flips},
        "spaces": {space: {k: v for k, v in r.items() if k != "per_synthetic"} for space, r in spaces.items()},
        # Summary for a results table: the worse of the spaces.
        "near_copies": max(r["near_copies"] for r in spaces.values()),
        "mia_auc": max(r["mia_auc"] for r in spaces.values()),
        "worst": _worst_cases(spaces, data.synthetic_paths, data.train, settings.worst),
    }
    if out_dir is not None:
        write_audit(Path(out_dir), report, data.synthetic_paths, data.train)
    return report


def _check_disjoint(train: np.ndarray, held_out: np.ndarray) -> None:
    """Members and non-members must differ, or the attack's AUC means nothing (e.g. a folder dataset
    without split folders gives its whole folder as both splits)."""
    distances, _ = nearest_neighbours(held_out, train)
    if np.count_nonzero(distances == 0):
        raise ConfigError(f"{np.count_nonzero(distances == 0)} held-out images are also training images: the audit needs a "
                          "disjoint held-out set (a test split, or data.test={name: ..., root: ...})")


def _worst_cases(spaces: dict, synthetic_paths: list[Path], train: list[Sample], count: int) -> list[dict]:
    """The synthetic images closest to being near copies: smallest distance / threshold over the spaces."""
    names = list(spaces)
    ratios = np.stack([spaces[s]["per_synthetic"]["distance"] / max(spaces[s]["near_copy_threshold"], 1e-12) for s in names])
    worst = []
    for rank, i in enumerate(np.argsort(ratios.min(axis=0), kind="stable")[:count]):
        space = names[int(np.argmin(ratios[:, i]))]
        worst.append({
            "file": f"nearest/worst_{rank:02d}.png",
            "synthetic": synthetic_paths[i].name,
            "nearest_train": train[int(spaces[space]["per_synthetic"]["nearest_train"][i])].stem,
            "space": space,
            "distance_over_threshold": float(ratios[:, i].min()),
            **{f"{s}_distance": float(spaces[s]["per_synthetic"]["distance"][i]) for s in names},
        })
    return worst


def write_audit(out_dir: Path, report: dict, synthetic_paths: list[Path], train: list[Sample]) -> None:
    """`audit.json` and the side-by-side images of the worst cases."""
    by_stem = {s.stem: s for s in train}
    by_name = {p.name: p for p in synthetic_paths}
    for case in report["worst"]:
        real = by_stem[case["nearest_train"]]
        real_image = real.image * (real.fov[..., None] > 0)
        synthetic = read_rgb(by_name[case["synthetic"]])
        if synthetic.shape != real_image.shape:
            synthetic = cv2.resize(synthetic, real_image.shape[1::-1], interpolation=cv2.INTER_AREA)
        save_png(out_dir / case["file"], image_grid([synthetic, real_image], columns=2))
    write_json(out_dir / "audit.json", report)
