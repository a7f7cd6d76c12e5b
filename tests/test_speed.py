"""Speed options on CPU smoke runs: mixed precision (trainer.precision), channels_last, torch.compile
(speed.*), DataLoader workers (data.num_workers); and the step times every training run records."""

import json

import pytest
import torch

from helpers import SMOKE, assert_ok, assert_one_line_error, compose_config, run_cli
from synthmed_lightning.checkpoints import load_checkpoint, restore_module
from synthmed_lightning.models.image_gan import ImageGAN
from synthmed_lightning.models.segmenter import Segmenter
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.speed import SpeedOptions, networks, speed_options


@pytest.mark.parametrize("stage, options", [
    ("segment", ("trainer.precision=bf16-mixed", "speed.channels_last=true", "data.num_workers=1")),
    ("mask", ("trainer.precision=16-mixed", "speed.channels_last=true")),  # Lightning turns 16-mixed into bf16 on CPU
    ("image", ("trainer.precision=bf16-mixed", "speed.channels_last=true")),
])
def test_mixed_precision_and_channels_last(tmp_path, stage, options):
    iterations = () if stage == "segment" else (f"profile.{stage}.iterations=12", f"profile.{stage}.val_every=6")
    assert_ok(run_cli(f"stage={stage}", *SMOKE, *options, *iterations, f"hydra.run.dir={tmp_path}"))
    assert "bfloat16 Automatic Mixed Precision" in (tmp_path / "cli.log").read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert all(v == v for v in metrics.values())  # no NaN
    assert metrics["time/step_s"] > 0 and metrics["time/batch_s"] >= metrics["time/step_s"] * 0.5
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt", stage)
    if stage == "image":  # channels_last weights load into an ordinary (contiguous) module
        restore_module(ImageGAN, checkpoint)


@pytest.mark.slow
def test_compile_trains_and_keeps_checkpoint_keys(tmp_path):
    """speed.compile=true on the GAN stage (manual optimisation, spectral norm). The aot_eager backend
    traces the same graphs as inductor without generating kernels (inductor takes minutes on 2 cores)."""
    assert_ok(run_cli("stage=mask", *SMOKE, "speed.compile=true", "speed.compile_backend=aot_eager",
                      "profile.mask.iterations=8", "profile.mask.val_every=8", f"hydra.run.dir={tmp_path}"))
    state = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt", "mask")["state_dict"]
    assert not any("_orig_mod" in k for k in state)


def _segmenter() -> Segmenter:
    return Segmenter(net={"_target_": "synthmed_lightning.models.components.unet.UNet", "in_channels": 3,
                          "out_channels": 1, "base_channels": 4, "depth": 2})


def test_speed_options_callback():
    model = _segmenter()
    assert networks(model) == [model.net]  # not the metrics
    SpeedOptions(channels_last=True, compile=True).setup(None, model, "fit")
    conv = next(p for p in model.parameters() if p.ndim == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert model.net._compiled_call_impl is not None  # compiled in place: state-dict keys unchanged
    assert not any("_orig_mod" in k for k in model.state_dict())
    batch = {"image": torch.zeros(2, 3, 8, 8), "stem": ["a", "b"]}
    SpeedOptions(channels_last=True).on_train_batch_start(None, model, batch, 0)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("settings, fragment", [
    ({"compile": "maybe"}, "speed.compile"),
    ({"channels_last": 1}, "speed.channels_last"),
    ({"compile_mode": "fastest"}, "speed.compile_mode"),
    ({"compile_backend": "nope"}, "speed.compile_backend"),
    ({"fast": True}, "speed.fast"),
])
def test_bad_speed_settings_name_the_setting(settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        speed_options(settings)


@pytest.mark.parametrize("override, fragment", [("speed.compile=maybe", "speed.compile"),
                                                ("data.num_workers=-2", "data.num_workers")])
def test_bad_speed_settings_fail_in_one_line(override, fragment):
    assert_one_line_error(run_cli("stage=segment", *SMOKE, override), fragment)


def test_segment_precision_follows_the_profile(monkeypatch):
    """quick/paper train the U-Net in bf16 only where this machine has native bf16 kernels; smoke stays fp32."""
    from synthmed_lightning import config

    def precision(profile):
        return compose_config("stage=segment", f"profile={profile}").trainer.precision

    assert precision("smoke") == "32-true"
    assert precision("quick") == config.fast_precision()
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.fast_precision() == "32-true" and precision("paper") == "32-true"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert precision("quick") == "bf16-mixed"
