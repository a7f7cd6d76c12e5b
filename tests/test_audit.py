"""The privacy audit (audit.run_audit, stage=audit) on phantom exports: which real data it takes, a leaky
export, its controls, a generated export through the CLI, the report's table, and the repeated-split plan."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import assert_ok, assert_one_line_error, run_cli, smoke_run
from synthmed_lightning.audit import (AuditSettings, check_export_size, choose_real_data, flipped_views, perturbed_copy,
                                      run_audit, standardise_features)
from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.metrics.privacy import nearest_neighbours, roc_auc
from synthmed_lightning.export import DatasetWriter
from synthmed_lightning.study.mia_splits import MiaSplits, mia_splits_results, split_steps, write_splits
from synthmed_lightning.study.plan import StudyPlan
from synthmed_lightning.study.report import privacy_markdown, privacy_results

PHANTOM = {"name": "phantom", "count": 6, "seed": 0, "height": 96, "width": 96}  # the smoke profile's
FAST = AuditSettings(bootstrap_draws=300)


def _export(samples, out: Path, extra: dict | None = None) -> Path:
    with DatasetWriter(out) as writer:
        for i, s in enumerate(samples):
            writer.add(f"{i:04d}", s.image, s.mask, s.fov)
        writer.commit(extra or {"mode": "test"})
    return out


def test_an_export_of_the_training_images_is_flagged(tmp_path, segment_run):
    """The worst possible "synthetic" set, the training images themselves (half of them mirrored): every
    one a near copy in both spaces, both attacks win outright, and the side-by-side pictures pair
    each with its original."""
    train = read_dataset(PHANTOM, "train")
    leaky = _export(train[:3] + [flipped_views(s)[1] for s in train[3:]], tmp_path / "leaky")
    report = run_audit(leaky, PHANTOM, tmp_path / "audit", AuditSettings(worst=3, bootstrap_draws=300),
                       segment_ckpt=segment_run / "checkpoints" / "last.ckpt")
    assert set(report["spaces"]) == {"pixel", "feature"}
    for space in ("pixel", "feature"):
        values = report["spaces"][space]
        assert values["near_copies"] == len(train) and values["mia_auc"] == 1.0, space
        assert values["calibrated"]["auc"] == 1.0 and values["calibrated"]["tpr_at_fpr"]["1%"] == 1.0
        assert values["nn_synthetic_to_train"]["max"] < 1e-6 < values["near_copy_threshold"]
    assert report["near_copies"] == 6 and report["mia_auc"] == 1.0
    assert {w["synthetic"]: w["nearest_train"] for w in report["worst"]}.items() <= {
        f"{i:04d}.png": s.stem for i, s in enumerate(train)}.items()
    picture = cv2.imread(str(tmp_path / "audit" / "nearest" / "worst_00.png"))
    assert picture.shape[:2] == (96 + 4, 2 * 96 + 6)  # synthetic | nearest training image
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert saved["near_copies"] == 6 and saved["real_scores"]["member"] == [True] * 6 + [False] * 6


def test_without_a_segment_checkpoint_only_pixels_are_compared(tmp_path, capsys):
    train = read_dataset(PHANTOM, "train")
    report = run_audit(_export(train[:2], tmp_path / "leaky"), PHANTOM, settings=FAST)
    assert set(report["spaces"]) == {"pixel"} and report["feature_encoder"].startswith("none: no segment_ckpt")
    assert report["near_copies"] == 2 and report["mia_auc"] > 0.5
    # one progress bar over every image embedded: training + held-out + synthetic + planted copies
    total = len(train) + report["holdout_count"] + 2 + max(c["count"] for c in report["spaces"]["pixel"]["positive_controls"])
    err = capsys.readouterr().err
    assert "audit: embedding images" in err and f"{total}/{total}" in err


def test_held_out_images_must_not_be_training_images(tmp_path):
    train = read_dataset(PHANTOM, "train")
    real = _export(train, tmp_path / "real")  # a folder without split folders: train split == test split
    with pytest.raises(ConfigError, match="6 held-out images are also training images"):
        run_audit(_export(train[:2], tmp_path / "synthetic"), {"name": "folder", "root": str(real)}, settings=FAST)


def test_the_real_data_comes_from_the_manifest_and_a_disagreeing_one_is_refused(tmp_path):
    """An export records its real data (here `config.data` of a generate run that read it): the audit
    takes it by default; a dataset given that disagrees is refused naming the setting, unless forced."""
    recorded = {"name": "phantom", "root": None, "reader": {k: PHANTOM[k] for k in ("count", "seed", "height", "width")},
                "test": None, "test_split": "test"}
    extra = {"mode": "dual", "height": 96, "width": 96, "config": {"data": recorded, "mask_source": "real"}}
    export = _export(read_dataset({**PHANTOM, "seed": 5, "count": 3}, "train"), tmp_path / "export", extra)
    report = run_audit(export, None, settings=AuditSettings(controls=False, bootstrap_draws=100))
    assert report["real"] == {"name": "phantom", "root": None, "count": 6, "seed": 0, "height": 96, "width": 96}
    assert report["train_count"] == report["holdout_count"] == 6 and "config.data" in report["real_data_source"]

    manifest = json.loads((export / "manifest.json").read_text())
    quick = {**PHANTOM, "count": 20, "height": 584, "width": 565}  # the quick profile's default phantom
    with pytest.raises(ConfigError, match=r"^data.reader.count=20, data.reader.height=584, data.reader.width=565 "
                                          r"disagree with the export's manifest.json .* records reader.count=6, "
                                          r"reader.height=96, reader.width=96: .*force_data=true"):
        choose_real_data(manifest, quick)
    assert choose_real_data(manifest, quick, force=True).source == "the command line (forced)"
    assert choose_real_data(manifest, PHANTOM).real == PHANTOM
    # A generate run that did not read its data (Stage I's masks) records only its default: not binding.
    unsure = {**manifest, "config": {"data": recorded, "mask_source": "gan"}}
    assert choose_real_data(unsure, quick).real == quick
    with pytest.raises(ConfigError, match="its training images are 96x96 px .* the export's 584x565"):
        check_export_size({"height": 584, "width": 565}, read_dataset(PHANTOM, "train"), strict=True)
    with pytest.raises(ConfigError, match="records no real dataset .*: pass data="):
        choose_real_data({"mode": "test"}, None)


def test_controls_positive_detected_negative_not(tmp_path):
    """Phantom images of other seeds stand in for a generator that copies nothing: its calibrated AUC
    lies within the negative control's interval, which holds 0.5; with 20 % and 50 % of it replaced
    by perturbed training images, every planted copy is a near copy, and at 50 % (every member
    copied) the AUC lies above the floor too (12 + 12 images: at 20 % its interval is too wide)."""
    real = {**PHANTOM, "count": 12, "height": 64, "width": 64}
    export = _export(read_dataset({**real, "seed": 7, "count": 24}, "train"), tmp_path / "clean")
    report = run_audit(export, real, settings=AuditSettings(control_fractions=(0.2, 0.5), bootstrap_draws=500))
    pixel = report["spaces"]["pixel"]
    low, high = pixel["negative_control"]["calibrated"]["auc_ci95"]
    assert low < 0.5 < high and pixel["calibrated_vs_negative"] == "within"
    for control, count in zip(pixel["positive_controls"], (5, 12)):
        assert control["count"] == control["planted"] == control["planted_flagged"] == count and control["detected"]
    assert pixel["positive_controls"][1]["calibrated"]["auc"] == 1.0 and pixel["positive_controls"][1]["auc_above_negative"]
    assert report["positive_controls_detected"] == {"0.2": ["pixel"], "0.5": ["pixel"]}
    sample = read_dataset(real, "train")[0]
    first, again = (perturbed_copy(sample, np.random.default_rng(3)) for _ in range(2))
    assert np.array_equal(first.image, again.image) and not np.array_equal(first.image, sample.image)


def test_audit_stage_on_a_generated_export(tmp_path_factory, tmp_path, segment_run):
    """Without data=..., the audit takes the smoke phantom the generators trained on (6 + 6 at 96 px),
    not the default quick-profile phantom, ends with its findings as log lines, and refuses a
    dataset that disagrees in one line."""
    generators = {stage: smoke_run(tmp_path_factory, stage) / "checkpoints" / "last.ckpt" for stage in ("mask", "image")}
    export = tmp_path / "synthetic"
    assert_ok(run_cli("stage=generate", "profile=smoke", f"hydra.run.dir={tmp_path / 'generate'}", "num_samples=8",
                      f"mask_ckpt={generators['mask']}", f"image_ckpt={generators['image']}", f"out_dir={export}"))
    segment_ckpt = segment_run / "checkpoints" / "last.ckpt"
    audit = ("stage=audit", f"synthetic_dir={export}", f"segment_ckpt={segment_ckpt}", "audit.bootstrap_draws=300",
             f"hydra.run.dir={tmp_path / 'audit'}")
    result = run_cli(*audit)
    assert_ok(result)
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert report["synthetic_count"] == 8 and report["train_count"] == report["holdout_count"] == 6
    assert report["real"]["height"] == 96 and "image generator's training run" in report["real_data_source"]
    assert report["feature_encoder"].startswith(f"U-Net encoder levels 0-1 of {segment_ckpt}")
    assert 0.0 <= report["mia_auc"] <= 1.0 and len(report["worst"]) == 8
    assert (tmp_path / "audit" / "nearest" / "worst_07.png").is_file()
    metrics = json.loads((tmp_path / "audit" / "metrics.json").read_text())
    assert metrics["audit/mia_auc"] == report["mia_auc"] and "audit/feature/near_copy_threshold" in metrics
    assert metrics["audit/feature/calibrated/auc"] == report["spaces"]["feature"]["calibrated"]["auc"]
    printed = result.stdout + result.stderr
    for space in ("pixel", "feature"):
        assert f"{space}: near copies {report['spaces'][space]['near_copies']} of 8" in printed
        assert f"{space}: negative control (no member) calibrated AUC" in printed
    assert "positive control 20% (2 perturbed copies)" in printed

    assert_one_line_error(run_cli(*audit, "profile=smoke", "data.reader.height=64"),
                          "data.reader.height=64 disagrees", "records reader.height=96", "force_data=true")
    image = export / "images" / "0003.png"
    image.write_bytes(image.read_bytes()[:-1] + b"\x00")
    assert_one_line_error(run_cli(*audit), "does not match its manifest", "images/0003.png")


def _attack(auc, low, high, tpr=(0.1, 0.3)):
    return {"auc": auc, "auc_ci95": [low, high], "tpr_at_fpr": {"1%": tpr[0], "10%": tpr[1]}}


def test_the_reports_privacy_section_is_a_table(tmp_path):
    """From a hand-made audit.json: one row per export and space, with the controls' readings."""
    control = {"fraction": 0.05, "count": 10, "planted": 10, "planted_flagged": 9, "detected": True,
               "calibrated": _attack(0.8, 0.7, 0.9)}
    space = {"near_copies": 0, "holdout_near_copies": 1, "raw": _attack(0.565, 0.39, 0.74),
             "calibrated": _attack(0.52, 0.33, 0.70, (0.05, 0.15)),
             "negative_control": {"calibrated": _attack(0.49, 0.27, 0.71)}, "calibrated_vs_negative": "within",
             "positive_controls": [control, {**control, "fraction": 0.01, "planted": 2, "planted_flagged": 0,
                                             "detected": False}]}
    audit = {"synthetic_count": 200, "holdout_count": 20, "near_copies": 0, "mia_auc": 0.565, "worst": [],
             "feature_encoder": "U-Net encoder levels 0-1 of best.ckpt", "spaces": {"pixel": space}}
    (tmp_path / "runs" / "audit_dual_gan").mkdir(parents=True)
    (tmp_path / "runs" / "audit_dual_gan" / "audit.json").write_text(json.dumps(audit))
    privacy = privacy_results(tmp_path, ["dual_gan", "single_gan"])
    assert set(privacy) == {"dual_gan"} and "worst" not in privacy["dual_gan"]
    lines = privacy_markdown(privacy)
    assert lines[1] == "## Privacy audit" and lines[5].startswith("| export | space | near copies |")
    assert lines[7] == ("| dual_gan | pixel | 0 of 200 | 1 of 20 | 0.565 [0.39, 0.74] | 0.520 [0.33, 0.70] | "
                        "0.05 / 0.15 | 0.490 [0.27, 0.71] | within | 5%: yes (9/10 flagged); 1%: **no** (0/2 flagged) |")
    assert "Feature space: U-Net encoder levels 0-1 of best.ckpt." in lines


def test_repeated_splits_plan_folders_and_analysis(tmp_path):
    """experiment=mia_splits: complementary halves, one folder per split, four steps per run, and the
    analysis from the runs' audit.json files."""
    splits = MiaSplits.from_config({"runs": 4, "pool": "all", "seed": 0})
    members = splits.membership(8)
    assert members.sum(axis=1).tolist() == [2] * 8 and members.sum(axis=0).tolist() == [4] * 4
    assert (members[:, 0] == ~members[:, 1]).all()
    with pytest.raises(ConfigError, match="study.mia_splits.runs=3"):
        MiaSplits.from_config({"runs": 3})
    real = {"name": "phantom", "count": 4, "seed": 0, "height": 32, "width": 32}
    folders = write_splits(tmp_path, real, splits)
    spec = {"name": "folder", "root": str(folders[1])}
    assert len(read_dataset(spec, "train")) == len(read_dataset(spec, "test")) == 4
    plan = StudyPlan(out=tmp_path, real_data=real, real_data_args=["data=phantom"], common_args=["profile=smoke"],
                     num_synthetic=8)
    steps = split_steps(plan, splits)
    assert [s.name for s in steps[:4]] == ["train_mask_split0", "train_image_split0", "generate_dual_gan_split0",
                                           "audit_split0"]
    assert f"data.root='{folders[0]}'" in steps[3].arguments and "segment_real" in steps[3].after

    stems = [s.stem for s in read_dataset(real, "all")]
    rng = np.random.default_rng(0)
    for k in range(4):
        run = tmp_path / "runs" / f"audit_split{k}"
        run.mkdir(parents=True)
        order = [i for i in range(8) if members[i, k]] + [i for i in range(8) if not members[i, k]]
        scores = {"raw": rng.normal(size=8).tolist(), "calibrated": (members[order, k] * 1.0).tolist()}
        run.joinpath("audit.json").write_text(json.dumps({"real_scores": {
            "stems": [stems[i] for i in order], "member": members[order, k].tolist(), "pixel": scores}}))
    results = mia_splits_results(tmp_path, splits, draws=100)
    assert results["finished"] == 4 and results["pixel"]["calibrated"]["self"]["auc"] == 1.0
    assert "feature" not in results
    table = privacy_markdown({}, results)
    assert any(line.startswith("| pixel | calibrated | 1.000") for line in table)
    assert not any(line.startswith("| export |") for line in table)  # no audited export: no empty table


def test_feature_scaling_sees_no_member_where_nothing_leaked():
    """Members, held-out images and the export all drawn from one distribution (nothing leaked), in 64
    dimensions of very different scales: after `standardise_features` the raw attack's mean AUC is 0.5.
    z-scored with the members' statistics alone it read about 0.58: the members had shaped the scale."""
    rng = np.random.default_rng(0)
    aucs = []
    for _ in range(100):
        scale = rng.lognormal(0.0, 1.0, 64)
        sets = {name: {"feature": rng.normal(size=(count, 64)) * scale}
                for name, count in (("train", 20), ("holdout", 20), ("synthetic", 200))}
        standardise_features(sets)
        member, outsider = (nearest_neighbours(sets[name]["feature"], sets["synthetic"]["feature"])[0]
                            for name in ("train", "holdout"))
        aucs.append(roc_auc(-member, -outsider))
    assert abs(np.mean(aucs) - 0.5) < 0.025, np.mean(aucs)
