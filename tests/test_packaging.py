"""`pip install .` (a real wheel, not editable) ships the configs: the CLI runs from any directory."""

import os
import subprocess
import sys

from helpers import PROJECT_ROOT


def test_wheel_ships_configs_and_runs_elsewhere(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                            str(PROJECT_ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    assert (target / "synthmed_lightning" / "conf" / "config.yaml").is_file()
    assert (target / "synthmed_lightning" / "experiments" / "green_clahe.yaml").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-m", "synthmed_lightning", "stage=segment", "profile=smoke",
                          "callbacks=minimal", "trainer.max_steps=2", "+experiment=green_clahe", "hydra.run.dir=run"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (elsewhere / "run" / "metrics.json").is_file()
    config = (elsewhere / "run" / ".hydra" / "config.yaml").read_text()
    assert "mode: green" in config  # the packaged experiment was applied
