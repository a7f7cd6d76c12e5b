"""What the tests share: running the CLI as a user would, its error contract, composing configs,
and cached smoke runs. Fixtures live in conftest.py; tests import these with `from helpers import ...`."""

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DRIVE_ROOT = Path(os.environ.get("SYNTHMED_DRIVE", PROJECT_ROOT.parent / "shared" / "data" / "DRIVE"))


def run_cli(*overrides: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m synthmed_lightning <overrides>` in a subprocess, as a user runs it."""
    # One thread per process: tiny smoke models gain nothing from more, and DDP tests run two processes.
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "synthmed_lightning", *overrides], cwd=cwd or PROJECT_ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-5000:]}"


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Non-zero exit, a single `error: ...` line naming what went wrong, and no traceback."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


SMOKE = ("profile=smoke", "callbacks=minimal")


def compose_config(*overrides: str):
    """The composed config (with Hydra's own node) that `python -m synthmed_lightning <overrides>` would run."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from synthmed_lightning.config import plain_overrides, register_configs
    from synthmed_lightning.resources import config_dir

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):  # `+experiment=` as the CLI reads it
        return compose("config", overrides=plain_overrides(list(overrides)), return_hydra_config=True)


def smoke_run(tmp_path_factory, stage: str, *overrides: str) -> Path:
    """One smoke `stage=<stage>` run on the phantom per test session, cached by folder
    (`<stage>_smoke_run`), so every test file that needs its checkpoint reuses it."""
    out = tmp_path_factory.getbasetemp() / f"{stage}_smoke_run"
    if not (out / "checkpoints" / "last.ckpt").is_file():
        assert_ok(run_cli(f"stage={stage}", *SMOKE, f"hydra.run.dir={out}", *overrides))
    return out
