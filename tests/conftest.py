"""Shared fixtures: the real DRIVE copy beside the project and one smoke segment run per session.
The helpers they use (and tests import) are in helpers.py."""

import os
import sys

import pytest

from helpers import DRIVE_ROOT, SMOKE, assert_ok, run_cli

# Under pytest-xdist (`make test`: two workers) each worker computes on one thread: torch's default of a
# thread per core would have the workers fight over the cores. The CLI runs set their own (run_cli).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # read by torch when it loads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


@pytest.fixture(scope="session")
def drive_root():
    if not (DRIVE_ROOT / "training" / "images").is_dir():
        pytest.skip(f"DRIVE not found at {DRIVE_ROOT} (set SYNTHMED_DRIVE to its folder)")
    return DRIVE_ROOT


@pytest.fixture(scope="session")
def segment_run(tmp_path_factory):
    """One smoke `stage=segment` run on the phantom, shared by the tests that inspect its outputs."""
    out = tmp_path_factory.mktemp("segment_run")
    assert_ok(run_cli("stage=segment", *SMOKE, f"hydra.run.dir={out}"))
    return out
