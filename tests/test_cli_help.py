"""A newcomer's first commands: `--help`, `experiment=<name>`, the config tree at the start of a run,
and no known-harmless library messages in between."""

import logging
import re
import subprocess
import sys
import warnings

import pytest

from helpers import PROJECT_ROOT, compose_config, run_cli
from synthmed_lightning.config import group_options, plain_overrides


def test_help_is_the_apps_page():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    page = result.stdout
    for stage in group_options("stage"):  # every stage, one line each saying what it does
        assert re.search(rf"^  {stage} +\w", page, re.M), stage
    for group in ("data", "trainer", "logger", "profile", "privacy", "experiment", "hparams_search"):
        assert re.search(rf"^  {group} +\w", page, re.M), group
    assert "Examples:" in page and "README.md" in page and "docs/design.md" in page
    # Not Hydra's stock page: no private options, no config dump.
    assert "_vessels" not in page and "_dcgan" not in page
    assert "powered by Hydra" not in page and "seed: 42" not in page


def test_help_ignores_the_rest_of_the_command_line():
    result = run_cli("stage=mask", "-h")
    assert result.returncode == 0 and "Stages (stage=<name>" in result.stdout


def test_experiment_without_plus():
    cfg = compose_config("experiment=paper")
    assert cfg.stage == "study" and cfg.profile.name == "paper"
    assert compose_config().hydra.runtime.choices.experiment is None
    # The `+` form of older notes is rewritten before Hydra sees it.
    assert plain_overrides(["+experiment=paper", "++experiment=dp", "+data.x=1"]) == \
        ["experiment=paper", "experiment=dp", "+data.x=1"]


@pytest.mark.parametrize("form", ["experiment=green_clahe", "+experiment=green_clahe"])
def test_both_experiment_forms_on_the_command_line(form):
    result = run_cli("stage=segment", form, "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "mode: green" in result.stdout


def _tree_keys(output: str, keys) -> list[str]:
    """The keys drawn as top-level branches of a tree (`├── data`, or `+-- data` on an ASCII console)."""
    return [k for k in keys if re.search(rf"^[^\w\s]+\s*{re.escape(k)}\b", output, re.M)]


def test_config_tree_at_the_start_of_a_run(tmp_path):
    """A run that stops right after the tree (an empty folder to verify), so nothing trains."""
    keys = [k for k in compose_config("stage=verify", "synthetic_dir=x") if k != "hydra"]
    common = ("stage=verify", f"synthetic_dir={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'run'}")
    (tmp_path / "empty").mkdir()
    shown = run_cli(*common, "print_config=true")
    assert _tree_keys(shown.stdout, keys) == keys, shown.stdout[-3000:]
    hidden = run_cli(*common, "print_config=false")
    assert _tree_keys(hidden.stdout, keys) == [], hidden.stdout[-3000:]


def test_config_tree_is_drawn_on_a_terminal_only_by_default(capsys):
    """auto (the default): not into a file or pipe, such as a study step's log."""
    from synthmed_lightning.console import wants_config_tree

    assert compose_config().print_config == "auto"
    assert not wants_config_tree("auto")  # pytest captures the output
    assert wants_config_tree(True) and not wants_config_tree(False)


def test_known_harmless_messages_are_silenced(capsys, caplog, monkeypatch):
    """Each message through the path its library really uses; an unrelated warning still shows."""
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

    from synthmed_lightning.console import _LIGHTNING_RANK_ZERO_LOGGER, _drop_lightning_tip, quiet_known_noise

    monkeypatch.setattr(wandb, "termwarn", wandb.termwarn)  # restored afterwards
    lightning_log = logging.getLogger(_LIGHTNING_RANK_ZERO_LOGGER)  # Lightning may stop propagation to root
    caplog.set_level(logging.INFO, logger=_LIGHTNING_RANK_ZERO_LOGGER)
    lightning_log.addHandler(caplog.handler)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        quiet_known_noise(uses_wandb=True)
        try:
            rank_zero_warn("Found 16 module(s) in eval mode at the start of training. This may lead to ...")
            rank_zero_warn("Using ModelCheckpoint with manual optimization and every_n_train_steps, but no "
                           "pre-optimization state was saved.\ndef training_step(self, batch, batch_idx):")
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` ...",
                          FutureWarning)
            rank_zero_warn("an unrelated warning")
            rank_zero_info("Tip: For seamless cloud logging, try installing [litlogger](https://pypi.org/project/litlogger/)")
            rank_zero_info("GPU available: False, used: False")
            wandb.Settings(anonymous=None)  # what Lightning's WandbLogger passes
            wandb.termwarn("another W&B warning")
        finally:
            lightning_log.removeFilter(_drop_lightning_tip)
            lightning_log.removeHandler(caplog.handler)
    assert [str(w.message) for w in shown] == ["an unrelated warning"]
    assert "GPU available" in caplog.text and "litlogger" not in caplog.text
    stderr = capsys.readouterr().err
    assert "anonymous" not in stderr and "another W&B warning" in stderr


@pytest.mark.parametrize("overrides, fragment", [
    (("stage=evaluate", "profile=smoke"), "ckpt_path"),
    (("stage=evaluate", "profile=smoke", "ckpt_path=/nowhere/x.ckpt"), "file not found"),
    (("stage=generate", "profile=smoke", "num_samples=2"), "mask_ckpt"),
])
def test_missing_settings_and_checkpoints_are_named_before_lightning_loads(overrides, fragment):
    """These errors need only the config: they come before torch and Lightning are imported (seconds on a
    small CPU), so a typo in a checkpoint path is answered at once."""
    probe = ("import sys, runpy\n"
             f"sys.argv = ['synthmed_lightning', *{list(overrides)!r}]\n"
             "try:\n    runpy.run_module('synthmed_lightning', run_name='__main__')\n"
             "except SystemExit as exit:\n"
             "    print('exit', exit.code, 'lightning' in sys.modules, 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert fragment in result.stderr, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "exit 2 False False", result.stdout[-2000:]
