"""A checkpoint from elsewhere is data: loading it never calls what it names, and every malformed one
is a one-line CheckpointError (a fuzz over generated files, then the CLI contract end to end)."""

import copy
import random

import pytest
import torch

from helpers import SMOKE, assert_one_line_error, run_cli
from synthmed_lightning.checkpoints import load_checkpoint, load_module, restore_module
from synthmed_lightning.errors import CheckpointError
from synthmed_lightning.models.image_gan import ImageGAN
from synthmed_lightning.models.segmenter import Segmenter

# What a crafted `_target_` could call if it reached Hydra's instantiate: each writes or creates a file.
PAYLOADS = [
    lambda victim: {"_target_": "builtins.open", "file": str(victim), "mode": "w"},
    lambda victim: {"_target_": "shutil.copyfile", "src": str(victim), "dst": str(victim) + ".copy"},
    lambda victim: {"_target_": "os.makedirs", "name": str(victim) + ".dir"},
    lambda victim: {"_target_": "pathlib.Path.touch", "self": str(victim) + ".touched"},
    # A real network with a nested spec that would be built too.
    lambda victim: {"_target_": "synthmed_lightning.models.components.unet.UNet",
                    "dropout": {"_target_": "builtins.open", "file": str(victim), "mode": "w"}},
]


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "home" / "thesis.txt"
    path.parent.mkdir()
    path.write_text("four years of work")
    return path


def _untouched(victim) -> bool:
    siblings = sorted(p.name for p in victim.parent.iterdir())
    return victim.read_text() == "four years of work" and siblings == ["thesis.txt"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_network_target_from_a_checkpoint_is_never_called(segment_run, victim, payload):
    checkpoint = load_checkpoint(segment_run / "checkpoints" / "last.ckpt", "segment")
    checkpoint["hyper_parameters"]["net"] = payload(victim)
    with pytest.raises(CheckpointError, match="refused") as error:
        restore_module(Segmenter, checkpoint)
    assert "\n" not in str(error.value)
    assert _untouched(victim)


def test_image_gan_networks_come_from_the_allow_list_too(victim):
    hparams = {"generator": PAYLOADS[0](victim), "discriminator": PAYLOADS[0](victim)}
    with pytest.raises(CheckpointError, match="generator._target_='builtins.open'"):
        restore_module(ImageGAN, {"hyper_parameters": hparams, "state_dict": {}})
    assert _untouched(victim)


def test_the_cli_refuses_a_crafted_checkpoint_in_one_line(segment_run, victim, tmp_path):
    """End to end through `stage=evaluate` (pseudolabel, generate and audit load through the same
    `load_module`, tested in-process above)."""
    checkpoint = load_checkpoint(segment_run / "checkpoints" / "last.ckpt", "segment")
    checkpoint["hyper_parameters"]["net"] = PAYLOADS[0](victim)
    crafted = tmp_path / "crafted" / "model.ckpt"
    crafted.parent.mkdir()
    torch.save(checkpoint, crafted)
    result = run_cli("stage=evaluate", f"ckpt_path={crafted}", *SMOKE, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, str(crafted), "builtins.open", "not one of this package's networks")
    assert _untouched(victim)


def _malformed_checkpoints(good: dict, rng: random.Random):
    """(name, bytes-or-dict) pairs: corrupt files and dicts with wrong shapes and types."""
    raw = _to_bytes(good)
    yield "empty", b""
    yield "random bytes", bytes(rng.getrandbits(8) for _ in range(2048))
    for cut in (10, len(raw) // 3, len(raw) - 7):
        yield f"truncated at {cut}", raw[:cut]
    yield "not a dict", [1, 2, 3]
    yield "no state_dict", {k: v for k, v in good.items() if k != "state_dict"}
    yield "no hyper_parameters", {k: v for k, v in good.items() if k != "hyper_parameters"}
    yield "hyper_parameters a list", {**good, "hyper_parameters": ["net"]}
    for key, value in (("tile_size", "huge"), ("threshold", [0.5]), ("net", "UNet"), ("preprocess", 3),
                       ("lr", True), ("train_fov_diameter", {"a": 1}), ("unknown_setting", 1)):
        bad = copy.deepcopy(good)
        bad["hyper_parameters"][key] = value
        yield f"hyper_parameters.{key}={value!r}", bad
    bad = copy.deepcopy(good)
    bad["state_dict"] = {k: torch.zeros(3) for k in good["state_dict"]}
    yield "weights of the wrong shape", bad
    bad = copy.deepcopy(good)
    bad["state_dict"] = {k: "not a tensor" for k in good["state_dict"]}
    yield "weights that are not tensors", bad
    bad = copy.deepcopy(good)
    bad["synthmed_stage"] = "image"
    yield "another stage's", bad


def _to_bytes(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_fuzzed_checkpoints_fail_in_one_line(segment_run, tmp_path):
    good = load_checkpoint(segment_run / "checkpoints" / "last.ckpt", "segment")
    for index, (name, content) in enumerate(_malformed_checkpoints(good, random.Random(0))):
        path = tmp_path / f"{index}.ckpt"
        path.write_bytes(content if isinstance(content, bytes) else _to_bytes(content))
        with pytest.raises(CheckpointError) as error:
            load_module(Segmenter, path, "segment")
        assert "\n" not in str(error.value), name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{i}.ckpt" for i in range(index + 1))
