"""stage=pseudolabel: a smoke segmenter labels unlabelled fundus images into a data=folder dataset."""

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_ok, run_cli
from synthmed_lightning.data.phantom import make_phantom_dataset
from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.export import read_manifest, sha256_file, verify_manifest
from synthmed_lightning.stages.pseudolabel import folder_images
from synthmed_lightning.visualize import save_png
from test_image_stage import compose_config


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory) -> tuple[Path, list]:
    """A plain folder of 3 phantom fundus images (no masks), and the phantoms with their true masks."""
    folder = tmp_path_factory.mktemp("unlabelled")
    phantoms = make_phantom_dataset(3, seed=11, height=96, width=96)
    for p in phantoms:
        save_png(folder / f"{p.stem}.png", p.image)
    return folder, phantoms


def test_pseudolabel_writes_a_loadable_folder_dataset(segment_run, unlabelled, tmp_path):
    folder, phantoms = unlabelled
    ckpt = segment_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "labelled"
    result = run_cli("stage=pseudolabel", "profile=smoke", f"hydra.run.dir={tmp_path / 'run'}", f"ckpt_path={ckpt}",
                     "data=folder", f"data.root={folder}", f"out_dir={out}")
    assert_ok(result)
    samples = read_dataset({"name": "folder", "root": str(out)}, "train")
    assert [s.stem for s in samples] == [p.stem for p in phantoms]
    for s, p in zip(samples, phantoms):
        assert np.array_equal(s.image, p.image)  # lossless PNG copies
        assert s.mask is not None and not s.mask[s.fov == 0].any()
        assert (s.fov == p.fov).mean() > 0.97  # derived from the image
        dice = 2 * (s.mask & p.mask).sum() / (s.mask.sum() + p.mask.sum())
        assert dice > 0.3, dice  # the smoke segmenter finds the vessels roughly
    manifest = read_manifest(out)
    assert verify_manifest(out) == []
    assert manifest["mode"] == "pseudolabel" and manifest["count"] == 3
    assert manifest["checkpoints"]["segment"]["sha256"] == sha256_file(ckpt)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["pseudolabel/count"] == 3


def test_pseudolabel_refuses_a_wrong_stage_checkpoint(unlabelled, tmp_path):
    import torch

    from synthmed_lightning.errors import CheckpointError
    from synthmed_lightning.stages.pseudolabel import run_pseudolabel

    folder, _ = unlabelled
    bogus = tmp_path / "bogus.ckpt"
    torch.save({"state_dict": {}, "synthmed_stage": "image"}, bogus)
    cfg = compose_config("stage=pseudolabel", f"ckpt_path={bogus}", "data=folder", f"data.root={folder}",
                         f"out_dir={tmp_path / 'out'}")
    with pytest.raises(CheckpointError, match="expected a stage=segment checkpoint"):
        run_pseudolabel(cfg)
    assert not (tmp_path / "out").exists()


def test_folder_images_accepts_both_layouts(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "b.png").write_bytes(b"")
    (plain / "a.jpg").write_bytes(b"")
    (plain / "notes.txt").write_text("not an image")
    images, fov_dir = folder_images(plain)
    assert [p.name for p in images] == ["a.jpg", "b.png"] and fov_dir is None

    layout = tmp_path / "layout"
    (layout / "images").mkdir(parents=True)
    (layout / "fov").mkdir()
    (layout / "images" / "x.tif").write_bytes(b"")
    images, fov_dir = folder_images(layout)
    assert [p.name for p in images] == ["x.tif"] and fov_dir == layout / "fov"
