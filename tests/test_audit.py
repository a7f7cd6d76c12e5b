"""The privacy audit (audit.run_audit, stage=audit) on phantom exports: a leaky one and a generated one."""

import json
from pathlib import Path

import cv2
import pytest

from helpers import assert_ok, assert_one_line_error, run_cli, smoke_run
from synthmed_lightning.audit import AuditSettings, flipped_views, run_audit
from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.export import DatasetWriter

PHANTOM = {"name": "phantom", "count": 6, "seed": 0, "height": 96, "width": 96}  # the smoke profile's


def _export(samples, out: Path) -> Path:
    with DatasetWriter(out) as writer:
        for i, s in enumerate(samples):
            writer.add(f"{i:04d}", s.image, s.mask, s.fov)
        writer.commit({"mode": "test"})
    return out


def test_an_export_of_the_training_images_is_flagged(tmp_path, segment_run):
    """The worst possible "synthetic" set, the training images themselves (half of them mirrored): every
    one a near copy in both spaces, the membership attack wins outright, and the side-by-side pictures
    pair each with its original."""
    train = read_dataset(PHANTOM, "train")
    leaky = _export(train[:3] + [flipped_views(s)[1] for s in train[3:]], tmp_path / "leaky")
    report = run_audit(leaky, PHANTOM, tmp_path / "audit", AuditSettings(worst=3),
                       segment_ckpt=segment_run / "checkpoints" / "last.ckpt")
    assert set(report["spaces"]) == {"pixel", "feature"}
    for space in ("pixel", "feature"):
        values = report["spaces"][space]
        assert values["near_copies"] == len(train) and values["mia_auc"] == 1.0, space
        assert values["nn_synthetic_to_train"]["max"] < 1e-6 < values["near_copy_threshold"]
    assert report["near_copies"] == 6 and report["mia_auc"] == 1.0
    assert {w["synthetic"]: w["nearest_train"] for w in report["worst"]}.items() <= {
        f"{i:04d}.png": s.stem for i, s in enumerate(train)}.items()
    picture = cv2.imread(str(tmp_path / "audit" / "nearest" / "worst_00.png"))
    assert picture.shape[:2] == (96 + 4, 2 * 96 + 6)  # synthetic | nearest training image
    assert json.loads((tmp_path / "audit" / "audit.json").read_text())["near_copies"] == 6


def test_without_a_segment_checkpoint_only_pixels_are_compared(tmp_path):
    train = read_dataset(PHANTOM, "train")
    report = run_audit(_export(train[:2], tmp_path / "leaky"), PHANTOM)
    assert set(report["spaces"]) == {"pixel"} and report["feature_encoder"].startswith("none: no segment_ckpt")
    assert report["near_copies"] == 2 and report["mia_auc"] > 0.5


def test_held_out_images_must_not_be_training_images(tmp_path):
    train = read_dataset(PHANTOM, "train")
    real = _export(train, tmp_path / "real")  # a folder without split folders: train split == test split
    with pytest.raises(ConfigError, match="6 held-out images are also training images"):
        run_audit(_export(train[:2], tmp_path / "synthetic"), {"name": "folder", "root": str(real)})


def test_audit_stage_on_a_generated_export(tmp_path_factory, tmp_path, segment_run):
    generators = {stage: smoke_run(tmp_path_factory, stage) / "checkpoints" / "last.ckpt" for stage in ("mask", "image")}
    export = tmp_path / "synthetic"
    assert_ok(run_cli("stage=generate", "profile=smoke", f"hydra.run.dir={tmp_path / 'generate'}", "num_samples=8",
                      f"mask_ckpt={generators['mask']}", f"image_ckpt={generators['image']}", f"out_dir={export}"))
    segment_ckpt = segment_run / "checkpoints" / "last.ckpt"
    audit = ("stage=audit", "profile=smoke", f"synthetic_dir={export}", f"segment_ckpt={segment_ckpt}",
             f"hydra.run.dir={tmp_path / 'audit'}")
    assert_ok(run_cli(*audit))
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert report["synthetic_count"] == 8 and report["train_count"] == report["holdout_count"] == 6
    assert report["feature_encoder"].startswith(f"U-Net encoder levels 0-1 of {segment_ckpt}")
    assert 0.0 <= report["mia_auc"] <= 1.0 and len(report["worst"]) == 8
    assert (tmp_path / "audit" / "nearest" / "worst_07.png").is_file()
    metrics = json.loads((tmp_path / "audit" / "metrics.json").read_text())
    assert metrics["audit/mia_auc"] == report["mia_auc"] and "audit/feature/near_copy_threshold" in metrics

    image = export / "images" / "0003.png"
    image.write_bytes(image.read_bytes()[:-1] + b"\x00")
    assert_one_line_error(run_cli(*audit), "does not match its manifest", "images/0003.png")
