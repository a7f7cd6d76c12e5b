"""stage=segment and stage=evaluate end to end through the CLI, on the phantom (smoke profile)."""

import json

import cv2
import pytest
import torch
import yaml

from helpers import SMOKE, assert_ok, run_cli
from synthmed_lightning.checkpoints import load_checkpoint, restore_module
from synthmed_lightning.models.segmenter import VAL_THRESHOLD_KEY, Segmenter

TEST_KEYS = ("test/f1_vessel", "test/f1_macro", "test/auc", "test/accuracy", "test/sensitivity", "test/specificity")
# Scores at the threshold that maximised f1_vessel on the validation images, and that threshold.
VAL_THRESHOLD_KEYS = ("test/f1_vessel_at_val_threshold", "test/sensitivity_at_val_threshold",
                      "test/specificity_at_val_threshold", "test/val_threshold")


def test_segment_writes_the_run_directory_contract(segment_run):
    assert (segment_run / ".hydra" / "config.yaml").is_file()
    assert (segment_run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((segment_run / "metrics.json").read_text())
    for key in TEST_KEYS + VAL_THRESHOLD_KEYS:
        assert 0.0 <= metrics[key] <= 1.0, key
    # The threshold the tested (best) checkpoint chose on its validation images.
    best = load_checkpoint(segment_run / "checkpoints" / "best.ckpt", "segment")
    assert metrics["test/val_threshold"] == best[VAL_THRESHOLD_KEY]
    probs = sorted((segment_run / "predictions").glob("*_prob.png"))
    overlays = sorted((segment_run / "predictions").glob("*_overlay.png"))
    assert len(probs) == len(overlays) == 6  # the smoke phantom's test split
    prob = cv2.imread(str(probs[0]), cv2.IMREAD_GRAYSCALE)
    assert prob.shape == (96, 96) and prob.max() > 128  # native size, some confident vessels


def test_segment_learned(segment_run):
    metrics = json.loads((segment_run / "metrics.json").read_text())
    assert metrics["train/loss_last"] < 0.9 * metrics["train/loss_first"]
    # 40 steps on the phantom already separate vessels from background far above chance.
    assert metrics["test/auc"] > 0.85 and metrics["test/f1_vessel"] > 0.4


def test_checkpoint_records_scale_and_preprocessing(segment_run):
    checkpoint = load_checkpoint(segment_run / "checkpoints" / "last.ckpt", "segment")
    hparams = checkpoint["hyper_parameters"]
    assert 80 < hparams["train_fov_diameter"] < 96
    assert hparams["preprocess"] == {"mode": "rgb", "clahe": False}
    model = restore_module(Segmenter, checkpoint)
    assert isinstance(model, Segmenter)


def test_prediction_maps_reproduce_the_reported_f1(segment_run):
    """Anyone can recompute the metrics from the PNGs: check that we can."""
    from synthmed_lightning.data.readers import read_dataset

    samples = read_dataset({"name": "phantom", "count": 6, "height": 96, "width": 96}, "test")
    tp = fp = fn = 0
    for s in samples:
        prob = cv2.imread(str(segment_run / "predictions" / f"{s.stem}_prob.png"), cv2.IMREAD_GRAYSCALE)
        pred, truth, fov = prob >= 128, s.mask.astype(bool), s.fov.astype(bool)
        tp += (pred & truth & fov).sum()
        fp += (pred & ~truth & fov).sum()
        fn += (~pred & truth & fov).sum()
    metrics = json.loads((segment_run / "metrics.json").read_text())
    assert 2 * tp / (2 * tp + fp + fn) == pytest.approx(metrics["test/f1_vessel"], abs=0.01)


def test_evaluate_reuses_a_checkpoint_on_other_data(segment_run, tmp_path):
    out = tmp_path / "eval"
    result = run_cli("stage=evaluate", *SMOKE, f"ckpt_path={segment_run / 'checkpoints' / 'best.ckpt'}",
                     "data.reader.seed=5", f"hydra.run.dir={out}")
    assert_ok(result)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(TEST_KEYS) <= set(metrics) and metrics["test/auc"] > 0.8
    assert len(list((out / "predictions").glob("*_prob.png"))) == 6
    assert not (out / "checkpoints").exists()  # evaluate trains nothing


def test_validation_threshold_travels_in_the_checkpoint_to_the_test(tmp_path, caplog):
    """Validation picks the threshold, the checkpoint keeps it, a fresh module tests with it; a
    checkpoint without one (written before it existed) falls back to model.threshold and says so."""
    unet = {"_target_": "synthmed_lightning.models.components.unet.UNet", "base_channels": 2, "depth": 1}
    target = (torch.arange(64).view(1, 1, 8, 8) % 5 == 0)
    probs = torch.where(target, 0.3, 0.1)  # mis-calibrated: separable, but no vessel reaches 0.5
    fov = torch.ones_like(target)

    def logged_by(model, hook):
        logged = {}
        model.log_dict = lambda values, **kwargs: logged.update({k: float(v) for k, v in values.items()})
        hook()
        return logged

    model = Segmenter(net=unet)
    model.val_metrics.update(probs, target, fov)
    val = logged_by(model, model.on_validation_epoch_end)
    assert 0.1 < val["val/best_threshold"] == model.val_threshold < 0.3
    assert val["val/f1_vessel_best_threshold"] == 1.0 and val["val/f1_vessel"] == 0.0  # selection stays at 0.5

    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "model.ckpt")
    loaded = load_checkpoint(tmp_path / "model.ckpt", "segment")  # weights_only, as trainer.test loads it
    fresh = restore_module(Segmenter, loaded)  # no new weights: older checkpoints still fit
    fresh.on_load_checkpoint(loaded)
    assert fresh.val_threshold == model.val_threshold
    fresh.test_metrics.update(probs, target, fov)
    test = logged_by(fresh, fresh.on_test_epoch_end)
    assert test["test/val_threshold"] == model.val_threshold
    assert test["test/f1_vessel_at_val_threshold"] == 1.0 and test["test/f1_vessel"] == 0.0

    del loaded[VAL_THRESHOLD_KEY]
    fresh.on_load_checkpoint(loaded)
    fresh.test_metrics.update(probs, target, fov)
    with caplog.at_level("WARNING", logger="synthmed_lightning.models.segmenter"):
        test = logged_by(fresh, fresh.on_test_epoch_end)
    assert test["test/val_threshold"] == 0.5 and test["test/f1_vessel_at_val_threshold"] == 0.0
    assert "No threshold chosen on validation images" in caplog.text


def test_evaluate_resamples_to_the_training_scale():
    """An image at twice the training FOV scale is shrunk before the network sees it."""
    seen = []

    class Spy(torch.nn.Module):
        size_multiple = 4

        def forward(self, x):
            seen.append(tuple(x.shape[-2:]))
            return torch.zeros(x.shape[0], 1, *x.shape[-2:])

    unet = {"_target_": "synthmed_lightning.models.components.unet.UNet", "base_channels": 2, "depth": 1}
    model = Segmenter(net=unet, train_fov_diameter=50.0, tile_size=512)
    model.net = Spy()
    probs = model.predict_probabilities(torch.zeros(1, 3, 200, 220), fov_diameter=100.0)
    assert probs.shape == (1, 1, 200, 220)  # mapped back to native size
    assert seen == [(112, 112)]  # one square tile over 100x110 (half scale), padded to a multiple of 4
    seen.clear()
    model.predict_probabilities(torch.zeros(1, 3, 200, 220), fov_diameter=51.0)  # within 5%: native
    assert seen == [(220, 220)]  # one square tile over the native 200x220


def test_hydra_multirun_sweeps(tmp_path):
    """The README's sweep, as written (profile=smoke is already part of it), from another folder."""
    assert_ok(run_cli("-m", "stage=segment", "profile=smoke", "model.lr=1e-3,2e-3", cwd=tmp_path))
    sweeps = list((tmp_path / "outputs" / "multirun" / "segment").iterdir())
    assert len(sweeps) == 1
    runs = sorted(p for p in sweeps[0].iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["0", "1"]
    lrs = [yaml.safe_load((p / ".hydra" / "config.yaml").read_text())["model"]["lr"] for p in runs]
    assert lrs == [1e-3, 2e-3]
    assert all(json.loads((p / "metrics.json").read_text())["test/auc"] > 0.5 for p in runs)


def test_wandb_offline_writes_a_run(tmp_path):
    """The README's `logger=wandb` command (with profile=smoke), offline as without credentials."""
    result = run_cli("stage=segment", "profile=smoke", "logger=wandb", cwd=tmp_path,
                     env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert_ok(result)
    runs = list(tmp_path.rglob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
    media = list(runs[0].parent.glob("files/media/images/test/*.png"))
    assert media, "prediction overlays should be logged as images"
    assert b"patches_per_epoch" in runs[0].read_bytes()  # the resolved config was logged


def test_evaluate_at_another_camera_scale(segment_run, tmp_path):
    """Tested on the same phantoms photographed at twice the scale (a folder dataset), the model
    still works because evaluate resamples to its training scale; without resampling it does not."""
    from synthmed_lightning.data.readers import read_dataset
    from synthmed_lightning.data.transforms import resize_sample
    from synthmed_lightning.metrics.segmentation import VesselSegmentationMetrics

    native = read_dataset({"name": "phantom", "count": 6, "height": 96, "width": 96}, "test")
    larger = [resize_sample(s, 2.0) for s in native]
    for folder in ("images", "masks", "fov"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for s in larger:
        cv2.imwrite(str(tmp_path / "data" / "images" / f"{s.stem}.png"), s.image[..., ::-1])
        cv2.imwrite(str(tmp_path / "data" / "masks" / f"{s.stem}.png"), s.mask * 255)
        cv2.imwrite(str(tmp_path / "data" / "fov" / f"{s.stem}.png"), s.fov * 255)

    ckpt = segment_run / "checkpoints" / "best.ckpt"
    out = tmp_path / "eval2x"
    assert_ok(run_cli("stage=evaluate", *SMOKE, f"ckpt_path={ckpt}", "data=folder", f"data.root={tmp_path / 'data'}",
                      f"hydra.run.dir={out}"))
    rescaled = json.loads((out / "metrics.json").read_text())
    assert cv2.imread(str(out / "predictions" / f"{larger[0].stem}_prob.png"), cv2.IMREAD_GRAYSCALE).shape == (192, 192)
    assert rescaled["test/auc"] > json.loads((segment_run / "metrics.json").read_text())["test/auc"] - 0.1

    # The same model fed the large images as they are (no resampling) does markedly worse.
    model = restore_module(Segmenter, load_checkpoint(ckpt, "segment")).eval()
    naive = VesselSegmentationMetrics()
    for s in larger:
        image = torch.from_numpy(s.image).permute(2, 0, 1)[None].float() / 127.5 - 1
        probs = model.predict_probabilities(image, fov_diameter=model.hparams.train_fov_diameter)
        naive.update(probs, torch.from_numpy(s.mask)[None, None], torch.from_numpy(s.fov)[None, None])
    assert float(naive.compute()["f1_vessel"]) < rescaled["test/f1_vessel"] - 0.05


def test_a_checkpoint_from_another_network_version_fails_in_one_line(segment_run, tmp_path):
    from synthmed_lightning.errors import CheckpointError

    checkpoint = load_checkpoint(segment_run / "checkpoints" / "last.ckpt", "segment")
    checkpoint["state_dict"] = {k.replace("net.encoders", "net.blocks"): v for k, v in checkpoint["state_dict"].items()}
    with pytest.raises(CheckpointError, match="do not fit this version's Segmenter"):
        restore_module(Segmenter, checkpoint)
    edited = tmp_path / "edited.ckpt"
    torch.save(checkpoint, edited)
    result = run_cli("stage=evaluate", *SMOKE, f"ckpt_path={edited}", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "do not fit this version's Segmenter" in result.stderr


def test_same_seed_and_config_give_identical_metrics(segment_run, tmp_path):
    """Determinism on CPU: a second run of the same command reproduces every metric (timings aside)."""
    assert_ok(run_cli("stage=segment", *SMOKE, f"hydra.run.dir={tmp_path}"))
    first, second = (json.loads((d / "metrics.json").read_text()) for d in (segment_run, tmp_path))
    drop_times = lambda m: {k: v for k, v in m.items() if not k.startswith("time/")}  # noqa: E731
    assert drop_times(first) == drop_times(second)
    for prob in sorted((segment_run / "predictions").glob("*_prob.png")):
        assert prob.read_bytes() == (tmp_path / "predictions" / prob.name).read_bytes(), prob.name
