"""Bad input (docs/design.md): one `error:` line naming the file or setting, exit != 0, no traceback,
and nothing already written is damaged."""

import json
import shutil

import cv2
import numpy as np
import pytest

from helpers import SMOKE, assert_one_line_error, run_cli


def test_unknown_stage():
    assert_one_line_error(run_cli("stage=segmnet"), "unknown stage 'segmnet'", "segment")


def test_unknown_data_model_and_profile():
    assert_one_line_error(run_cli("data=drvie"), "unknown data 'drvie'", "drive")
    assert_one_line_error(run_cli("model=unet3d"), "unknown model 'unet3d'", "segmenter")
    assert_one_line_error(run_cli("profile=fast"), "unknown profile 'fast'", "smoke")
    assert_one_line_error(run_cli("privacy=dpsgd"), "unknown privacy 'dpsgd'", "dp, none")
    assert_one_line_error(run_cli("hparams_search=segmnt"), "unknown hparams_search 'segmnt'", "segment_optuna")


def test_missing_dataset_root(tmp_path):
    result = run_cli("stage=segment", "data=drive", f"data.root={tmp_path / 'nowhere'}", *SMOKE,
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, "data.root=", "nowhere", "not found")


def test_mislaid_drive_root_names_the_layout(tmp_path, drive_root):
    result = run_cli("stage=segment", "data=drive", f"data.root={drive_root / 'test'}", *SMOKE,
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, "DRIVE layout", "training/images")


def test_wrong_layout_is_named(tmp_path):
    """A folder that exists but holds another layout (no DRIVE download needed)."""
    (tmp_path / "photos").mkdir()
    result = run_cli("stage=segment", "data=folder", f"data.root={tmp_path}", *SMOKE, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, f"data.root={tmp_path}", "folder layout", "root/images/")
    result = run_cli("stage=segment", "data=drive", f"data.root={tmp_path}", *SMOKE, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, f"data.root={tmp_path}", "DRIVE layout", "training/images")


def test_empty_image_folder_is_named(tmp_path):
    for d in ("images", "masks"):
        (tmp_path / "data" / d).mkdir(parents=True)
    result = run_cli("stage=segment", "data=folder", f"data.root={tmp_path / 'data'}", *SMOKE,
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, "no images", str(tmp_path / "data" / "images"))


def _folder_dataset(root, n=4):
    from synthmed_lightning.data.phantom import make_phantom_dataset

    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    for p in make_phantom_dataset(n, seed=1, height=64, width=64):
        cv2.imwrite(str(root / "images" / f"{p.stem}.png"), p.image[..., ::-1])
        cv2.imwrite(str(root / "masks" / f"{p.stem}.png"), p.mask * 255)


def test_truncated_image_is_named(tmp_path):
    _folder_dataset(tmp_path / "data")
    image = tmp_path / "data" / "images" / "phantom_0002.png"
    image.write_bytes(image.read_bytes()[:100])
    result = run_cli("stage=segment", "data=folder", f"data.root={tmp_path / 'data'}", *SMOKE,
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, "phantom_0002.png")


def test_mask_size_mismatch_is_named(tmp_path):
    _folder_dataset(tmp_path / "data")
    cv2.imwrite(str(tmp_path / "data" / "masks" / "phantom_0001.png"), np.zeros((32, 40), np.uint8))
    result = run_cli("stage=segment", "data=folder", f"data.root={tmp_path / 'data'}", *SMOKE,
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, "phantom_0001.png is 40x32", "64x64")


def test_non_binary_mask_is_named(tmp_path):
    _folder_dataset(tmp_path / "data")
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))
    cv2.imwrite(str(tmp_path / "data" / "masks" / "phantom_0003.png"), ramp)
    result = run_cli("stage=segment", "data=folder", f"data.root={tmp_path / 'data'}", *SMOKE,
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, "phantom_0003.png is not binary")


def test_mistyped_setting_is_named(tmp_path):
    result = run_cli("stage=segment", *SMOKE, "data.batch_size=many", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "batch_size")
    result = run_cli("stage=segment", *SMOKE, "data.patch_size=30", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "data.patch_size=30", "multiple")
    result = run_cli("stage=segment", *SMOKE, "data.batchsize=3", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "data.batchsize: no such setting", "+data.batchsize=")


def test_evaluate_needs_a_checkpoint_of_the_right_stage(tmp_path, segment_run):
    assert_one_line_error(run_cli("stage=evaluate", *SMOKE), "ckpt_path")
    assert_one_line_error(run_cli("stage=evaluate", *SMOKE, f"ckpt_path={tmp_path / 'x.ckpt'}"), "x.ckpt", "not found")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    assert_one_line_error(run_cli("stage=evaluate", *SMOKE, f"ckpt_path={garbage}"), "garbage.ckpt")


def test_a_failed_rerun_keeps_earlier_outputs(tmp_path, segment_run):
    """A bad rerun into an existing run directory must not touch what the good run wrote."""
    run = tmp_path / "run"
    shutil.copytree(segment_run, run)
    before = (run / "metrics.json").read_text()
    checkpoint = (run / "checkpoints" / "last.ckpt").read_bytes()
    record = {p.name: p.read_text() for p in (run / ".hydra").iterdir()}
    assert set(record) == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    result = run_cli("stage=segment", "data=drive", f"data.root={tmp_path / 'nowhere'}", *SMOKE, f"hydra.run.dir={run}")
    assert_one_line_error(result, "nowhere")
    assert {p.name: p.read_text() for p in (run / ".hydra").iterdir()} == record  # the good run's settings
    assert (run / "metrics.json").read_text() == before
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == checkpoint
    assert json.loads(before)["test/f1_vessel"] > 0


def test_multirun_with_subprocess_ddp_is_refused(tmp_path):
    """Several devices under `-m` (the default strategy auto, which is DDP then) is refused in one line."""
    result = run_cli("-m", "stage=mask", *SMOKE, "trainer.devices=2", f"hydra.sweep.dir={tmp_path}")
    assert_one_line_error(result, "trainer.devices=2", "ddp_spawn")


def _copy_run(segment_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(segment_run, run)
    return run, (run / "checkpoints" / "last.ckpt").read_bytes()


def test_resuming_from_another_stage_checkpoint_is_refused(tmp_path, segment_run):
    run, checkpoint = _copy_run(segment_run, tmp_path)
    result = run_cli("stage=mask", *SMOKE, "ckpt_path=last", f"hydra.run.dir={run}")
    assert_one_line_error(result, "last.ckpt comes from stage=segment, expected a stage=mask checkpoint")
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == checkpoint


def test_resuming_with_an_incompatible_config_is_refused(tmp_path, segment_run):
    run, checkpoint = _copy_run(segment_run, tmp_path)
    result = run_cli("stage=segment", *SMOKE, "ckpt_path=last", "profile.segment.base_channels=16", f"hydra.run.dir={run}")
    assert_one_line_error(result, "last.ckpt was trained with another config", "(8, 3, 3, 3) there, (16, 3, 3, 3)")
    result = run_cli("stage=segment", *SMOKE, "ckpt_path=last", "profile.segment.max_steps=80", f"hydra.run.dir={run}")
    assert_one_line_error(result, "one-cycle LR schedule of 40 steps", "trainer.max_steps=40")
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == checkpoint


def test_unwritable_output_folder_is_named(tmp_path, segment_run):
    """Where a run or an export cannot write (a file in the way; a read-only folder for non-root users)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_cli("stage=segment", *SMOKE, f"hydra.run.dir={blocker / 'run'}")
    assert_one_line_error(result, "hydra.run.dir=", "a_file is a file, not a folder")
    result = run_cli("stage=pseudolabel", f"ckpt_path={segment_run / 'checkpoints' / 'last.ckpt'}",
                     f"out_dir={blocker / 'labelled'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, "out_dir=", "a_file is a file, not a folder")


# Budgets and seeds: a budget below 1 trains without end (negative GAN iterations become
# max_steps=-1) or not at all; a seed outside numpy's range failed with a traceback.
@pytest.mark.parametrize(("overrides", "fragment"), [
    (("stage=mask", "profile.mask.iterations=-5"), "profile.mask.iterations=-5: must be an integer >= 1"),
    (("stage=image", "profile.image.iterations=0"), "profile.image.iterations=0"),
    (("stage=single", "profile.single.val_every=0"), "profile.single.val_every=0"),
    (("stage=segment", "profile.segment.max_steps=-3"), "profile.segment.max_steps=-3"),
    # Any stage's budget is checked, not only the running stage's.
    (("stage=segment", "profile.mask.iterations=abc"), "profile.mask.iterations=abc"),
    (("stage=segment", "trainer.max_steps=0"), "trainer.max_steps=0: must be an integer >= 1"),
    (("stage=segment", "trainer.max_steps=-1"), "trainer.max_steps=-1"),
    (("stage=evaluate", "ckpt_path=x.ckpt", "trainer.max_steps=-2"), "trainer.max_steps=-2: must be an integer >= 1 or -1"),
    (("stage=segment", "seed=-1"), "seed=-1: must be an integer from 0 to 4294967295"),
    (("stage=segment", "seed=4294967296"), "seed=4294967296"),
    (("stage=segment", "seed=1.5"), "seed=1.5"),
    (("stage=segment", "seed=null"), "seed=None"),
    # A count the Trainer takes unchecked failed in the middle of fit with a traceback.
    (("stage=segment", "trainer.max_epochs=x"), "trainer.max_epochs=x: must be an integer"),
    (("stage=segment", "print_config=maybe"), "print_config=maybe: must be true, false or auto"),
])
def test_bad_budgets_and_seeds_are_refused_before_running(overrides, fragment):
    from helpers import compose_config
    from synthmed_lightning.config import validate
    from synthmed_lightning.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        validate(compose_config(*SMOKE, *overrides))
    assert fragment in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("overrides", [
    ("stage=mask",), ("stage=segment", "seed=0"), ("stage=segment", f"seed={2**32 - 1}"),
    ("stage=generate", "num_samples=1", "out_dir=x", "single_ckpt=x"),  # trainer.max_steps=-1: not a training stage
])
def test_good_budgets_and_seeds_pass(overrides):
    from helpers import compose_config
    from synthmed_lightning.config import validate

    validate(compose_config(*SMOKE, *overrides))


def test_negative_seed_is_one_line_on_the_command_line(tmp_path):
    result = run_cli("stage=segment", *SMOKE, "seed=-1", f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(result, "seed=-1: must be an integer from 0 to 4294967295")


def test_logger_none_trains(tmp_path):
    """`logger=none` (documented) leaves the learning-rate monitor out instead of crashing; and with
    Python's warnings shown as a user sees them, the known-harmless library messages stay out
    (console.quiet_known_noise; each one is checked in tests/test_cli_help.py)."""
    from helpers import assert_ok

    result = run_cli("stage=segment", "profile=smoke", "logger=none", "trainer.max_steps=4", f"hydra.run.dir={tmp_path}",
                     env={"PYTHONWARNINGS": "default"})
    assert_ok(result)
    assert json.loads((tmp_path / "metrics.json").read_text())["train/steps"] == 4
    for noise in ("litlogger", "LeafSpec", "module(s) in eval mode", "anonymous setting", "manual optimization"):
        assert noise not in result.stdout + result.stderr, noise


def test_a_trainer_that_cannot_be_built_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: trainer=gpu builds")
    assert_one_line_error(run_cli("stage=segment", *SMOKE, "trainer=gpu", f"hydra.run.dir={tmp_path}"),
                          "trainer:", "gpu")


def test_generate_names_everything_it_needs_at_once():
    """A newcomer's first `stage=generate` learns in one line that it needs checkpoints too."""
    error = assert_one_line_error(run_cli("stage=generate", "profile=smoke"), "mask_ckpt=", "image_ckpt=", "single_ckpt=")
    assert "num_samples=" in error and "out_dir=" in error
