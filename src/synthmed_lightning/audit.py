"""Privacy audit of an exported synthetic set (`stage=audit`, or `run_audit` from Python).

The question: does the synthetic set give away the real training images? docs/privacy.md says how
to read the answer; this module gathers the images and runs the measures of `metrics/privacy.py`.

Which real images: by default those the export's generators learned from (`recorded_data`): the
data setting of each generator's training run, found beside the checkpoint the manifest lists
(and only while that checkpoint still has the manifest's sha256), else the `config.data` that
`stage=generate` wrote into the manifest. Members: that dataset's train split; held-out images:
its test split (or its `data.test`). A dataset given explicitly that disagrees with the record,
or whose images are not the export's size, is refused unless forced (`choose_real_data`).

Each image becomes a vector in up to two spaces:
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

Controls, with every audit (`controls`): a negative one (half the held-out images standing in for
the export: no member in it) and positive ones (the export with `control_fractions` of its images
replaced by lightly perturbed training images, `perturbed_copy`), seeded and deterministic.
Writes `audit.json` and, for the `worst` synthetic images closest to being copies (smallest
distance / near-copy threshold over the spaces), `nearest/worst_XX.png`: the synthetic image beside
its nearest training image (unflipped).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from synthmed_lightning.checkpoints import load_module
from synthmed_lightning.data.io import read_rgb
from synthmed_lightning.data.mask_data import to_square
from synthmed_lightning.data.readers import dataset_spec, read_dataset
from synthmed_lightning.data.sample import Sample
from synthmed_lightning.data.streaming import folder_images, stream_folder
from synthmed_lightning.data.transforms import DEFAULT_PREPROCESS, preprocess, to_tensor_layout
from synthmed_lightning.errors import ConfigError, DataError
from synthmed_lightning.export import MANIFEST, check_export, sha256_file
from synthmed_lightning.metrics.privacy import (BOOTSTRAP_DRAWS, control_detection, negative_control,
                                                nearest_neighbours, privacy_report)
from synthmed_lightning.models.segmenter import Segmenter
from synthmed_lightning.utils import progress_bar, write_json
from synthmed_lightning.visualize import image_grid, save_png

log = logging.getLogger(__name__)

_GRID = 4    # each encoder level is average-pooled to GRID x GRID: coarse layout, not just "how much vessel"
_LEVELS = 2  # encoder levels used (finest first): measured best on DRIVE, see the module docstring
# The manifest's generators, in the order their training data is trusted: the painter (or the single
# GAN) made the pixels an audit compares; Stage I saw only masks.
_GENERATORS = ("image", "single", "mask")
# What must agree between a dataset given on the command line and the recorded one (reader options too).
_IDENTITY = ("name", "root")


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


# The size at which `perturbed_copy`'s shift and blur are given (DRIVE's longer side); smaller images get less.
_PERTURB_SCALE_PX = 565


def perturbed_copy(sample: Sample, rng: np.random.Generator) -> Sample:
    """A lightly perturbed copy of a training image, as a generator that memorised it might emit it:
    one of the four flips, shifted by up to 4 px, brightness x0.92-1.08 and +-8 grey levels, a
    Gaussian blur (sigma 0.5-1 px) and Gaussian noise (sigma 2-6 grey levels), black outside the
    (shifted) FOV. Shift and blur are for a 565 px image (DRIVE) and scale with the image's longer
    side: 4 px move a 96 px phantom as much as 24 px move DRIVE. Deterministic for a given `rng` state."""
    view = flipped_views(sample)[int(rng.integers(4))]
    height, width = view.fov.shape
    scale = max(height, width) / _PERTURB_SCALE_PX
    shift = int(4 * scale)  # whole pixels: none below 141 px
    dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, size=2))
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    image = cv2.warpAffine(view.image, move, (width, height), flags=cv2.INTER_NEAREST, borderValue=0)
    fov = cv2.warpAffine(view.fov, move, (width, height), flags=cv2.INTER_NEAREST, borderValue=0)
    image = image.astype(np.float32) * rng.uniform(0.92, 1.08) + rng.uniform(-8.0, 8.0)
    image = cv2.GaussianBlur(image, (0, 0), max(0.1, rng.uniform(0.5, 1.0) * scale))
    image = image + rng.normal(0.0, rng.uniform(2.0, 6.0), image.shape)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8) * (fov[..., None] > 0)
    return Sample(image=image, mask=None, fov=fov, stem=f"{sample.stem}_perturbed")


@dataclass(frozen=True)
class AuditSettings:
    """How the audit measures (`conf/stage/audit.yaml`'s `audit:` block explains each)."""

    pixel_size: int = 64
    feature_size: int | None = None
    near_copy_percentile: float = 5.0
    flips: bool = True
    worst: int = 8
    device: str = "cpu"
    controls: bool = True
    control_fractions: tuple[float, ...] = (0.01, 0.05, 0.2)
    bootstrap_draws: int = BOOTSTRAP_DRAWS
    seed: int = 0

    def __post_init__(self):
        if self.pixel_size < 4 or self.worst < 0:
            raise ConfigError(f"audit.pixel_size={self.pixel_size} must be >= 4 and audit.worst={self.worst} >= 0")
        if not all(0.0 < f <= 1.0 for f in self.control_fractions):
            raise ConfigError(f"audit.control_fractions={list(self.control_fractions)}: each must be in (0, 1]")
        if self.bootstrap_draws < 100:
            raise ConfigError(f"audit.bootstrap_draws={self.bootstrap_draws}: at least 100 for a 95 % interval")
        object.__setattr__(self, "control_fractions", tuple(float(f) for f in self.control_fractions))


# --- Which real data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealData:
    """The real images an audit compares with: `real`'s train split (members) and `holdout` (None:
    `real`) split `holdout_split` (held out), and where that choice came from (for the report)."""

    real: dict
    holdout: dict | None
    holdout_split: str
    source: str


def _training_data(entry) -> dict | None:
    """The `data` setting of the run that wrote a checkpoint the manifest lists: its run folder's
    `.hydra/config.yaml`, trusted only while the checkpoint still has the manifest's sha256 (a
    retrained generator in the same folder would otherwise speak for the old one)."""
    from omegaconf import OmegaConf

    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        return None
    checkpoint = Path(entry["path"])
    config = checkpoint.parent.parent / ".hydra" / "config.yaml"
    if not (config.is_file() and checkpoint.is_file()) or sha256_file(checkpoint) != entry.get("sha256"):
        return None
    try:
        data = OmegaConf.load(config).data
        return {key: OmegaConf.to_container(data[key], resolve=True) if OmegaConf.is_config(data[key]) else data[key]
                for key in ("name", "root", "reader", "test", "test_split") if key in data}
    except Exception as error:  # an unreadable or unresolvable record is no record
        log.warning("audit: cannot read the data setting of %s (%s)", config, error)
        return None


def recorded_data(manifest: dict | None) -> tuple[dict | None, str, bool]:
    """(data setting, where it was found, whether it is surely what the generators learned from).

    The generators' own training runs are sure. The manifest's `config.data` is the setting of the
    `stage=generate` run: sure when that run read the real data (`mask_source=real`), otherwise it
    may just be the default dataset of a command that did not need one."""
    if not manifest:
        return None, "", False
    for name in _GENERATORS:
        data = _training_data((manifest.get("checkpoints") or {}).get(name))
        if data and data.get("name"):
            return data, f"the {name} generator's training run ({Path(manifest['checkpoints'][name]['path']).parent.parent})", True
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    data = config.get("data")
    if isinstance(data, dict) and data.get("name"):
        return data, f"the export's {MANIFEST} (config.data)", config.get("mask_source") == "real"
    return None, "", False


def _spec(data: dict) -> dict:
    """A data setting as the reader spec `read_dataset` takes."""
    return dataset_spec(data["name"], data.get("root"), data.get("reader") or {})


def _differences(given: dict, recorded: dict) -> list[tuple[str, object, object]]:
    """(setting, given value, recorded value) of every disagreement between two reader specs."""
    def normal(spec, key):
        value = spec.get(key)
        if key == "root":
            return None if spec.get("name") == "phantom" or value is None else str(Path(value).expanduser().resolve())
        return value
    keys = list(_IDENTITY) + sorted((set(given) | set(recorded)) - set(_IDENTITY))
    return [(key if key in _IDENTITY else f"reader.{key}", given.get(key), recorded.get(key))
            for key in keys if normal(given, key) != normal(recorded, key)]


def choose_real_data(manifest: dict | None, real: dict | None, holdout: dict | None = None,
                     holdout_split: str | None = None, force: bool = False) -> RealData:
    """The real data to audit against: `real` (a reader spec) when given, else the export's record.

    A given dataset that disagrees with a sure record is a ConfigError naming every differing setting,
    unless `force`; with an unsure record it wins with a warning."""
    recorded, source, sure = recorded_data(manifest)
    if real is None:
        if recorded is None:
            raise ConfigError("the export records no real dataset (no generator run found, no config.data in its "
                              f"{MANIFEST}): pass data=<the dataset its generators learned from>")
        if not sure:
            log.warning("audit: taking data=%s from %s, the generate run's setting: its generators' training runs were "
                        "not found to confirm it (pass data=... to choose)", recorded["name"], source)
        test = recorded.get("test")
        return RealData(_spec(recorded), dataset_spec(**test) if test else holdout,
                        holdout_split or recorded.get("test_split") or "test", source)
    differences = _differences(real, _spec(recorded)) if recorded else []
    given = ", ".join(f"data.{key}={value}" for key, value, _ in differences)
    expected = ", ".join(f"{key}={value}" for key, _, value in differences)
    if differences and sure and not force:
        raise ConfigError(f"{given} {'disagrees' if len(differences) == 1 else 'disagree'} with {source}, which records "
                          f"{expected}: leave data out to audit against what the generators learned from, or pass "
                          "force_data=true")
    if differences:
        log.warning("audit: %s differ from %s (%s)%s", given, source, expected, ": force_data=true" if sure else "")
    return RealData(dict(real), holdout, holdout_split or "test", "the command line" + (" (forced)" if force else ""))


def check_export_size(manifest: dict | None, train: list[Sample], strict: bool) -> None:
    """The export's size (manifest height x width) should be the training images' (median) size:
    `stage=generate` exports at the size its generators learned at. ConfigError when `strict`."""
    if not manifest or not isinstance(manifest.get("height"), int) or not isinstance(manifest.get("width"), int):
        return
    size = (int(np.median([s.image.shape[0] for s in train])), int(np.median([s.image.shape[1] for s in train])))
    if size != (manifest["height"], manifest["width"]):
        message = (f"data: its training images are {size[0]}x{size[1]} px (height x width), the export's "
                   f"{manifest['height']}x{manifest['width']} ({MANIFEST})")
        if strict:
            raise ConfigError(f"{message}: not the data its generators learned from? Pass force_data=true to audit anyway")
        log.warning("audit: %s", message)


# --- The images ------------------------------------------------------------------------------------


@dataclass
class AuditData:
    """The three image sets an audit compares: real training images (members), real held-out images
    (non-members) and the synthetic export (streamed from disk)."""

    train: list[Sample]
    held_out: list[Sample]
    synthetic_paths: list[Path]
    synthetic: Iterable[Sample]


def verified_manifest(synthetic_dir: Path, manifest_sha256: str | None) -> dict | None:
    """The export's manifest, every file checked against it (None, with a warning, for a folder without one)."""
    if (synthetic_dir / MANIFEST).is_file():
        return check_export(synthetic_dir, manifest_sha256)  # never audit (and publish) a set that changed since export
    if not synthetic_dir.is_dir():
        raise DataError(f"synthetic_dir={synthetic_dir}: folder not found")
    log.warning("%s has no %s: auditing it unverified", synthetic_dir, MANIFEST)
    return None


def load_audit_data(synthetic_dir: Path, choice: RealData) -> AuditData:
    """The real sets of `choice` and the export's images (streamed)."""
    train, held_out = read_dataset(choice.real, "train"), read_dataset(choice.holdout or choice.real, choice.holdout_split)
    if len(train) < 2 or len(held_out) < 2:
        raise DataError(f"the audit needs >= 2 training and >= 2 held-out real images, got {len(train)} and {len(held_out)}")
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


def embed(extractors: dict, samples: Iterable[Sample], views: bool = False, advance=None) -> dict[str, np.ndarray]:
    """Per space (n, 1, d), or (n, 4, d) with the flipped views of every image; `advance()` after each image."""
    rows = {space: [] for space in extractors}
    for sample in samples:
        group = flipped_views(sample) if views else [sample]
        for space, extract in extractors.items():
            rows[space].append(np.stack([extract(v) for v in group]))
        if advance is not None:
            advance()
    return {space: np.stack(r) for space, r in rows.items()}


def plant_plan(synthetic_count: int, train_count: int, settings: AuditSettings) -> tuple[np.ndarray, np.ndarray]:
    """(synthetic rows to replace, training image copied into each), for the largest positive control;
    a smaller control replaces the first k of them (nested, so one set of copies serves all). Training
    images are used in a seeded random order, again from the start once all have been used."""
    largest = max((control_count(f, synthetic_count) for f in settings.control_fractions), default=0)
    rng = np.random.default_rng([settings.seed, 1])
    rows = rng.choice(synthetic_count, size=largest, replace=False)
    order = rng.permutation(train_count)
    return rows, order[np.arange(largest) % train_count]


def control_count(fraction: float, synthetic_count: int) -> int:
    """Images a positive control replaces: `fraction` of the export, at least one."""
    return min(synthetic_count, max(1, round(fraction * synthetic_count)))


# --- The audit ------------------------------------------------------------------------------------


def run_audit(synthetic_dir: str | Path, real: dict | None = None, out_dir: str | Path | None = None,
              settings: AuditSettings = AuditSettings(), *, holdout: dict | None = None, holdout_split: str | None = None,
              segment_ckpt: str | None = None, manifest_sha256: str | None = None, force_data: bool = False) -> dict:
    """Audit `synthetic_dir` (an export) against real data: `real` (a reader spec such as
    {"name": "drive", "root": ...}; None: what the export records, `choose_real_data`), its train
    split the members, `holdout` (default: `real`) split `holdout_split` (default: test) the held-out
    images. Returns the report (also `out_dir/audit.json`, with `out_dir/nearest/worst_XX.png`, when
    out_dir is given).
    """
    start = time.perf_counter()
    synthetic_dir = Path(synthetic_dir)
    manifest = verified_manifest(synthetic_dir, manifest_sha256)
    choice = choose_real_data(manifest, real, holdout, holdout_split, force_data)
    data = load_audit_data(synthetic_dir, choice)
    check_export_size(manifest, data.train, strict=real is not None and not force_data)
    extractors, encoder, size = feature_spaces(settings, data.train, segment_ckpt)
    rows, sources = plant_plan(len(data.synthetic_paths), len(data.train), settings) if settings.controls else ([], [])
    # Embedding every image (with its flips) is most of an audit's time: one bar over all of them.
    with progress_bar("audit: embedding images") as progress:
        task = progress.add_task("", total=len(data.train) + len(data.held_out) + len(data.synthetic_paths) + len(rows))
        step = partial(progress.advance, task)
        sets = {"train": embed(extractors, data.train, settings.flips, step),
                "holdout": embed(extractors, data.held_out, settings.flips, step)}
        _check_disjoint(sets["train"]["pixel"], sets["holdout"]["pixel"])
        sets["synthetic"] = embed(extractors, data.synthetic, advance=step)
        rng = np.random.default_rng([settings.seed, 2])
        sets["copies"] = embed(extractors, [perturbed_copy(data.train[i], rng) for i in sources], advance=step) if len(rows) else {}
    if "feature" in extractors:
        standardise_features(sets)
    log.info("audit: %d synthetic, %d training, %d held-out images (real data from %s)", len(data.synthetic_paths),
             len(data.train), len(data.held_out), choice.source)

    spaces = {space: audit_space(sets, space, rows, settings) for space in extractors}
    report = {
        "synthetic_dir": str(synthetic_dir.absolute()),
        "synthetic_count": len(data.synthetic_paths),
        "real": dict(choice.real),
        "holdout": {**(choice.holdout or choice.real), "split": choice.holdout_split},
        "real_data_source": choice.source,
        "train_count": len(data.train),
        "holdout_count": len(data.held_out),
        "feature_encoder": encoder.description if encoder else "none: no segment_ckpt given, feature space skipped",
        "settings": {"pixel_size": settings.pixel_size, "feature_size": size,
                     "near_copy_percentile": settings.near_copy_percentile, "flips": settings.flips,
                     "controls": settings.controls, "control_fractions": list(settings.control_fractions),
                     "bootstrap_draws": settings.bootstrap_draws, "seed": settings.seed},
        "spaces": {space: {k: v for k, v in r.items() if not k.startswith("per_")} for space, r in spaces.items()},
        # Summary for a results table: the worse of the spaces.
        "near_copies": max(r["near_copies"] for r in spaces.values()),
        "mia_auc": max(r["raw"]["auc"] for r in spaces.values()),
        "mia_auc_calibrated": max(r["calibrated"]["auc"] for r in spaces.values()),
        "positive_controls_detected": {
            f"{fraction:g}": [s for s in spaces if spaces[s]["positive_controls"][i]["detected"]]
            for i, fraction in enumerate(settings.control_fractions)} if settings.controls else {},
        "worst": _worst_cases(spaces, data.synthetic_paths, data.train, settings.worst),
        "real_scores": _real_scores(spaces, data.train, data.held_out),
        "seconds": time.perf_counter() - start,
    }
    if out_dir is not None:
        write_audit(Path(out_dir), report, data.synthetic_paths, data.train)
    return report


def standardise_features(sets: dict) -> None:
    """z-score every feature dimension of every set, in place, with the statistics of all scored real images,
    members ("train") and held-out alike. With the members' alone, a held-out image's unusual dimensions
    weigh more than a member's (the members shaped the scale), so held-out images look farther from
    everything and the attack reports members where nothing leaked."""
    reference = np.concatenate([sets[name]["feature"] for name in ("train", "holdout")])
    reference = reference.reshape(-1, reference.shape[-1])
    mean, std = reference.mean(axis=0), reference.std(axis=0) + 1e-6
    for values in sets.values():
        if "feature" in values:
            values["feature"] = (values["feature"] - mean) / std


def audit_space(sets: dict, space: str, planted_rows, settings: AuditSettings) -> dict:
    """`privacy_report` of the export in one space, with its controls: `negative_control` (a summary),
    `calibrated_vs_negative` (where the export's calibrated AUC lies against the negative control's
    interval: below, within or above) and `positive_controls` (one per control fraction)."""
    train, holdout, synthetic = sets["train"][space], sets["holdout"][space], sets["synthetic"][space]
    measure = partial(privacy_report, train=train, holdout=holdout, percentile=settings.near_copy_percentile,
                      draws=settings.bootstrap_draws, seed=settings.seed)
    report = measure(synthetic)
    if not settings.controls:
        return report
    negative = negative_control(train, holdout, settings.near_copy_percentile, settings.bootstrap_draws, settings.seed)
    low, high = negative["calibrated"]["auc_ci95"]
    auc = report["calibrated"]["auc"]
    report["negative_control"] = {**_summary(negative), "stand_in_count": negative["stand_in_count"],
                                  "holdout_count": negative["holdout_count"]}
    report["calibrated_vs_negative"] = "below" if auc < low else "above" if auc > high else "within"
    report["positive_controls"] = []
    for fraction in settings.control_fractions:
        count = control_count(fraction, len(synthetic))
        leaky = synthetic.copy()
        leaky[planted_rows[:count]] = sets["copies"][space][:count]
        control = measure(leaky)
        report["positive_controls"].append({"fraction": fraction, "count": count, **_summary(control),
                                            **control_detection(control, planted_rows[:count],
                                                                negative["calibrated"]["auc"])})
    return report


def _summary(report: dict) -> dict:
    """What the report keeps of a control's `privacy_report`."""
    return {key: report[key] for key in ("near_copies", "holdout_near_copies", "near_copy_threshold", "raw", "calibrated")}


def _real_scores(spaces: dict, train: list[Sample], held_out: list[Sample]) -> dict:
    """Every real image's membership scores per space (members first), for analyses across audits
    (`experiment=mia_splits` compares each image with itself over runs)."""
    first = next(iter(spaces.values()))["per_real"]
    return {"stems": [s.stem for s in train + held_out], "member": first["member"].tolist(),
            **{space: {"raw": r["per_real"]["raw"].tolist(), "calibrated": r["per_real"]["calibrated"].tolist()}
               for space, r in spaces.items()}}


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


def summary_lines(report: dict) -> list[str]:
    """What the audit found, per space, as the log lines a run ends with (docs/privacy.md reads them)."""
    def attack(a):
        low, high = a["auc_ci95"]
        return f"{a['auc']:.3f} [{low:.3f}, {high:.3f}]"
    lines = [f"audit of {report['synthetic_count']} synthetic images against {report['train_count']} training and "
             f"{report['holdout_count']} held-out images of data={report['real']['name']} (from {report['real_data_source']})"]
    for space, r in report["spaces"].items():
        tpr = r["calibrated"]["tpr_at_fpr"]
        lines.append(f"{space}: near copies {r['near_copies']} of {report['synthetic_count']} (held-out false alarms "
                     f"{r['holdout_near_copies']} of {report['holdout_count']}); MIA AUC raw {attack(r['raw'])}, "
                     f"calibrated {attack(r['calibrated'])}, TPR {' / '.join(f'{v:.2f} at {k}' for k, v in tpr.items())} FPR")
        if "negative_control" in r:
            lines.append(f"{space}: negative control (no member) calibrated AUC {attack(r['negative_control']['calibrated'])}: "
                         f"the export's is {r['calibrated_vs_negative']} its interval")
            lines += [f"{space}: positive control {c['fraction']:.0%} ({c['count']} perturbed copies): "
                      f"{c['planted_flagged']} flagged as near copies, calibrated AUC {attack(c['calibrated'])}: "
                      f"{'detected' if c['detected'] else 'NOT detected'}" for c in r["positive_controls"]]
    return lines


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
