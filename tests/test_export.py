"""The synthetic dataset writer (export.py) and stage=generate end to end (the export contract of docs/design.md)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import PROJECT_ROOT, assert_ok, assert_one_line_error, run_cli, smoke_run
from synthmed_lightning import export
from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.errors import ConfigError, DataError
from synthmed_lightning.export import MANIFEST, DatasetWriter, read_manifest, sha256_file, verify_manifest


def _sample(seed: int, h: int = 20, w: int = 24):
    rng = np.random.default_rng(seed)
    fov = np.zeros((h, w), np.uint8)
    fov[2:-2, 2:-2] = 1
    mask = (rng.random((h, w)) > 0.7).astype(np.uint8) * fov
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) * fov[..., None]
    return image, mask, fov


def _export(out: Path, count: int = 3, **kwargs) -> dict:
    with DatasetWriter(out, **kwargs) as writer:
        for i in range(count):
            writer.add(f"{i:04d}", *_sample(i))
        return writer.commit({"seed": 7})


def test_writer_layout_manifest_and_folder_loader(tmp_path):
    out = tmp_path / "synthetic"
    manifest = _export(out)
    assert sorted(p.name for p in out.iterdir()) == ["fov", "images", MANIFEST, "masks"]
    assert manifest["count"] == 3 and manifest["seed"] == 7 and len(manifest["files"]) == 9
    assert read_manifest(out)["files"]["images/0000.png"] == sha256_file(out / "images" / "0000.png")
    assert verify_manifest(out) == []
    mask_png = cv2.imread(str(out / "masks" / "0001.png"), cv2.IMREAD_GRAYSCALE)
    assert set(np.unique(mask_png)) <= {0, 255}
    samples = read_dataset({"name": "folder", "root": str(out)}, "train")
    image, mask, fov = _sample(1)
    assert [s.stem for s in samples] == ["0000", "0001", "0002"]
    assert np.array_equal(samples[1].image, image) and np.array_equal(samples[1].mask, mask)
    assert np.array_equal(samples[1].fov, fov)
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]  # no temporary folder left


def test_verify_manifest_detects_tampering(tmp_path):
    out = tmp_path / "synthetic"
    _export(out)
    image = cv2.imread(str(out / "images" / "0002.png"))
    image[5, 5] = 255 - image[5, 5]
    cv2.imwrite(str(out / "images" / "0002.png"), image)
    (out / "masks" / "0000.png").unlink()
    (out / "fov" / "extra.png").write_bytes((out / "fov" / "0001.png").read_bytes())
    problems = verify_manifest(out)
    assert any(p.startswith("changed: images/0002.png") for p in problems)
    assert "missing: masks/0000.png" in problems
    assert "not in the manifest: fov/extra.png" in problems
    assert len(problems) == 3
    assert verify_manifest(tmp_path / "nowhere") != []


def test_verify_flags_links_and_anything_unlisted(tmp_path):
    """A verified export holds exactly its listed regular files: a symlinked folder (whose files would
    hash right, read from elsewhere), a linked file, an unlisted top-level file or folder all fail."""
    out, outside = tmp_path / "synthetic", tmp_path / "outside"
    _export(out)
    manifest_text = (out / MANIFEST).read_text()
    (out / "images").rename(outside)
    (out / "images").symlink_to(outside)
    assert "symbolic link: images" in verify_manifest(out)
    assert "missing: images/0000.png" in verify_manifest(out)
    (out / "images").unlink()
    (outside).rename(out / "images")
    assert verify_manifest(out) == []
    (out / "payload.sh").write_text("echo hi")
    (out / "extra").mkdir()
    assert verify_manifest(out) == ["not in the manifest: payload.sh", "not in the manifest: extra/"]
    (out / "payload.sh").unlink()
    (out / "extra").rmdir()
    linked = out / "masks" / "0001.png"
    (tmp_path / "mask.png").write_bytes(linked.read_bytes())
    linked.unlink()
    linked.symlink_to(tmp_path / "mask.png")
    assert verify_manifest(out) == ["missing: masks/0001.png", "symbolic link: masks/0001.png"]
    assert (out / MANIFEST).read_text() == manifest_text


@pytest.mark.parametrize("manifest", ["[1, 2]", "\"text\"", "{\"files\": [\"a\"]}", "{\"files\": {\"a\": 3}}", "{}"])
def test_a_manifest_of_the_wrong_shape_is_one_problem(tmp_path, manifest):
    out = tmp_path / "synthetic"
    _export(out)
    (out / MANIFEST).write_text(manifest)
    problems = verify_manifest(out)
    assert len(problems) == 1 and "not an export manifest" in problems[0], problems
    with pytest.raises(DataError, match="not an export manifest"):
        read_manifest(out)


def test_overwrite_replaces_only_an_earlier_export(tmp_path):
    """overwrite=true must never delete a folder this project did not write, nor an export holding
    something its manifest does not list: the folder is left exactly as it was."""
    work = tmp_path / "work"
    (work / "checkpoints").mkdir(parents=True)
    (work / "thesis.tex").write_text("four years")
    (work / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    with pytest.raises(ConfigError, match="not an earlier export"):
        _export(work, overwrite=True)
    assert (work / "thesis.tex").read_text() == "four years" and (work / "checkpoints" / "last.ckpt").is_file()
    out = tmp_path / "synthetic"
    _export(out, count=2)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt"):
        _export(out, count=3, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and read_manifest(out)["count"] == 2
    (out / "notes.txt").unlink()
    (tmp_path / "empty").mkdir()
    _export(tmp_path / "empty", count=1, overwrite=True)  # an empty folder is fine
    assert verify_manifest(tmp_path / "empty") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "synthetic", "work"]


def test_existing_out_dir_refused_unless_overwrite(tmp_path):
    out = tmp_path / "synthetic"
    _export(out, count=2)
    before = read_manifest(out)
    with pytest.raises(ConfigError, match="already exists"):
        DatasetWriter(out)
    assert read_manifest(out) == before and verify_manifest(out) == []
    _export(out, count=3, overwrite=True)
    assert read_manifest(out)["count"] == 3 and verify_manifest(out) == []
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]


def test_crash_leaves_no_folder_and_keeps_the_old_one(tmp_path):
    out = tmp_path / "synthetic"
    with pytest.raises(RuntimeError):
        with DatasetWriter(out) as writer:
            writer.add("0000", *_sample(0))
            raise RuntimeError("crash while generating")
    assert list(tmp_path.iterdir()) == []
    _export(out, count=2)
    with pytest.raises(RuntimeError):
        with DatasetWriter(out, overwrite=True) as writer:
            writer.add("0000", *_sample(5))
            raise RuntimeError("crash while generating")
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]
    assert read_manifest(out)["count"] == 2 and verify_manifest(out) == []


def test_a_full_disk_keeps_the_old_export_and_says_so(tmp_path, monkeypatch):
    out = tmp_path / "synthetic"
    _export(out, count=2)
    writes = []

    def full_disk_open(path, mode="r", *args, **kwargs):
        writes.append(path)
        if len(writes) == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(export, "open", full_disk_open, raising=False)
    with pytest.raises(DataError, match=r"cannot write .*images/0001.png: No space left on device; nothing was exported"):
        _export(out, count=3, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic"]  # no temporary folder left
    assert read_manifest(out)["count"] == 2 and verify_manifest(out) == []


# ------------------------------------------------------------------ stage=generate through the CLI


@pytest.fixture(scope="module")
def generators(tmp_path_factory) -> dict[str, Path]:
    """Real smoke checkpoints of Stage I (stage=mask) and Stage II (stage=image) on the phantom."""
    return {stage: smoke_run(tmp_path_factory, stage) / "checkpoints" / "last.ckpt" for stage in ("mask", "image")}


def _generate(generators, tmp_path: Path, name: str, *extra: str):
    return run_cli("stage=generate", "profile=smoke", f"hydra.run.dir={tmp_path / (name + '_run')}",
                   f"mask_ckpt={generators['mask']}", f"image_ckpt={generators['image']}",
                   "num_samples=3", f"out_dir={tmp_path / name}", *extra)


def test_generate_is_deterministic_verifiable_and_loadable(generators, tmp_path):
    assert_ok(_generate(generators, tmp_path, "a", "seed=3"))
    assert_ok(_generate(generators, tmp_path, "b", "seed=3"))
    a, b = read_manifest(tmp_path / "a"), read_manifest(tmp_path / "b")
    assert a["files"] == b["files"] and len(a["files"]) == 9  # byte-identical images, masks, FOVs
    assert verify_manifest(tmp_path / "a") == []
    assert a["seed"] == 3 and a["mode"] == "dual" and (a["height"], a["width"]) == (96, 96)  # the phantom's native size
    for stage in ("mask", "image"):
        assert a["checkpoints"][stage]["sha256"] == sha256_file(generators[stage])
    assert a["config"]["num_samples"] == 3 and a["config"]["stage"] == "generate"
    samples = read_dataset({"name": "folder", "root": str(tmp_path / "a")}, "train")
    assert len(samples) == 3
    for s in samples:
        assert s.image.shape == (96, 96, 3) and s.mask.shape == s.fov.shape == (96, 96)
        assert not s.mask[s.fov == 0].any() and not s.image[s.fov == 0].any()  # vessels and colour only inside the FOV
        assert 0.3 < s.fov.mean() < 0.9  # the phantom's disc
    metrics = json.loads((tmp_path / "a_run" / "metrics.json").read_text())
    assert metrics["generate/count"] == 3
    assert (tmp_path / "a_run" / "samples" / "latest.png").is_file()


def test_generate_samples_a_global_appearance_per_image(generators, tmp_path):
    """pix2pix paints one appearance; appearance=colour (under photo, the default) spreads the images' mean colour like
    the training images', from the statistics the Stage II checkpoint keeps, without touching contrast."""
    from synthmed_lightning.checkpoints import load_checkpoint
    from synthmed_lightning.data.appearance import AppearanceModel, colour_statistics

    stats = {}
    for mode in ("colour", "colour_contrast", "painted"):
        assert_ok(_generate(generators, tmp_path, mode, "num_samples=8", f"appearance={mode}"))
        samples = read_dataset({"name": "folder", "root": str(tmp_path / mode)}, "train")
        stats[mode] = np.stack([colour_statistics(s.image, s.fov) for s in samples])
    model = AppearanceModel.from_dict(load_checkpoint(generators["image"], "image")["hyper_parameters"]["appearance"])
    real_spread = np.sqrt(np.diag(model.covariance))[:3]
    spread = {mode: values[:, :3].std(axis=0) for mode, values in stats.items()}
    assert (spread["colour"] > 3 * spread["painted"]).all(), spread
    assert (spread["colour"] > 0.3 * real_spread).all(), (spread, real_spread)
    # colour keeps each painting's contrast (up to clipping); colour_contrast moves it too.
    np.testing.assert_allclose(stats["colour"][:, 3:], stats["painted"][:, 3:], rtol=0.1)
    assert not np.allclose(stats["colour_contrast"][:, 3:], stats["painted"][:, 3:], rtol=0.1)
    result = _generate(generators, tmp_path, "bad", "appearance=random")
    assert_one_line_error(result, "appearance=random")


def test_generate_paints_with_the_batchnorm_statistics_asked_for(generators, tmp_path):
    """paint_statistics=image is what the smoke painter was trained with (the default: the same files as leaving it
    unset); running paints with the training averages: other images, the same masks."""
    for name, extra in (("trained", ()), ("image", ("paint_statistics=image",)), ("running", ("paint_statistics=running",))):
        assert_ok(_generate(generators, tmp_path, name, "seed=3", "appearance=painted", *extra))
    files = {name: read_manifest(tmp_path / name)["files"] for name in ("trained", "image", "running")}
    assert files["image"] == files["trained"]
    images = lambda f: {k: v for k, v in f.items() if k.startswith("images/")}  # noqa: E731
    masks = lambda f: {k: v for k, v in f.items() if k.startswith("masks/")}  # noqa: E731
    assert masks(files["running"]) == masks(files["trained"]) and images(files["running"]) != images(files["trained"])
    assert read_manifest(tmp_path / "running")["config"]["paint_statistics"] == "running"
    assert_one_line_error(_generate(generators, tmp_path, "bad", "paint_statistics=batch"), "paint_statistics=batch")
    assert_one_line_error(_generate(generators, tmp_path, "bad", "vessel_profile=maybe"), "vessel_profile=maybe")


def test_generate_with_a_wrong_stage_checkpoint_fails_cleanly(generators, tmp_path):
    result = run_cli("stage=generate", "profile=smoke", f"hydra.run.dir={tmp_path / 'run'}",
                     f"mask_ckpt={generators['image']}", f"image_ckpt={generators['image']}",
                     "num_samples=2", f"out_dir={tmp_path / 'out'}")
    assert_one_line_error(result, "stage=image", "expected a stage=mask checkpoint")
    assert not (tmp_path / "out").exists()


def test_a_killed_generate_leaves_no_folder_that_looks_complete(generators, tmp_path):
    """SIGKILL in the middle of an export: no out_dir, only a hidden temporary folder without a
    manifest; the same command then exports normally and clears the killed run's folder."""
    command = [sys.executable, "-m", "synthmed_lightning", "stage=generate", "profile=smoke",
               f"hydra.run.dir={tmp_path / 'run'}", f"mask_ckpt={generators['mask']}", f"image_ckpt={generators['image']}",
               "num_samples=500", "height=584", "width=565", f"out_dir={tmp_path / 'synthetic'}"]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline and not list(tmp_path.glob(".synthetic.tmp-*/images/0001.png")):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the export ended before it could be killed"
    assert not (tmp_path / "synthetic").exists()
    leftovers = list(tmp_path.glob(".synthetic.tmp-*"))
    assert len(leftovers) == 1 and not (leftovers[0] / MANIFEST).exists()
    running = tmp_path / f".synthetic.tmp-{os.getpid()}-feedbeef"  # a live writer's folder is kept
    running.mkdir()
    assert_ok(run_cli(*command[3:8], "num_samples=2", f"out_dir={tmp_path / 'synthetic'}"))
    assert verify_manifest(tmp_path / "synthetic") == []
    assert list(tmp_path.glob(".synthetic.tmp-*")) == [running]


def test_verify_command_names_the_tampered_file(tmp_path):
    """`stage=verify`: exit 0 on an intact export; one line naming the file after a change to an
    image, and after a change to the manifest itself (checked against its published sha256)."""
    out = tmp_path / "synthetic"
    _export(out)
    published = sha256_file(out / MANIFEST)
    verify = ("stage=verify", f"synthetic_dir={out}", f"hydra.run.dir={tmp_path / 'run'}")
    result = run_cli(*verify, f"manifest_sha256={published}")
    assert_ok(result)
    assert json.loads((tmp_path / "run" / "verify.json").read_text())["ok"] is True

    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"]["masks/0001.png"] = "0" * 64  # a forged hash
    (out / MANIFEST).write_text(json.dumps(manifest))
    # What stage=verify prints (the CLI's one-line contract is checked on the last case below).
    with pytest.raises(DataError, match="does not match its manifest: changed: masks/0001.png"):
        export.check_export(out)
    with pytest.raises(DataError, match="changed: manifest.json"):
        export.check_export(out, published)

    _export(out, overwrite=True)
    image = out / "images" / "0002.png"
    image.write_bytes(image.read_bytes()[:-1] + b"\x00")
    assert_one_line_error(run_cli(*verify), f"synthetic_dir={out}", "changed: images/0002.png")
    report = json.loads((tmp_path / "run" / "verify.json").read_text())
    assert report["ok"] is False and report["problems"] == ["changed: images/0002.png (sha256 differs from the manifest)"]
    with pytest.raises(DataError, match="folder not found"):
        export.check_export(tmp_path / "nowhere")


def test_verify_and_audit_refuse_a_linked_or_malformed_export_in_one_line(tmp_path):
    """A symlinked `images/` fails verification even with the right published manifest sha256, and
    a manifest that is a JSON list is one line for `verify` and for `audit` (which verifies first)."""
    out = tmp_path / "synthetic"
    _export(out)
    published = sha256_file(out / MANIFEST)
    (out / "images").rename(tmp_path / "elsewhere")
    (out / "images").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="missing: images/0000.png"):  # what stage=verify prints
        export.check_export(out, published)
    (out / MANIFEST).write_text("[1, 2, 3]")
    with pytest.raises(DataError, match="not an export manifest"):
        export.check_export(out)
    assert_one_line_error(run_cli("stage=audit", "profile=smoke", f"synthetic_dir={out}",
                                  f"hydra.run.dir={tmp_path / 'audit'}"), "not an export manifest")
