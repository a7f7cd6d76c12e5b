"""Fixtures of the study's tests: configs composed as the CLI composes them."""

import pytest

from helpers import SMOKE, compose_config


@pytest.fixture
def cli_config():
    """compose_config(*overrides) with Hydra's runtime config set as under the CLI (build_plan reads the
    command line's overrides from it); Hydra's previous runtime config is restored afterwards."""
    from hydra.core.hydra_config import HydraConfig

    saved = HydraConfig.instance().cfg

    def make(*overrides):
        cfg = compose_config(*overrides)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield make
    HydraConfig.instance().cfg = saved


@pytest.fixture
def study_cfg(tmp_path, cli_config):
    """A smoke `stage=study` config whose out_dir is `out` (default: a fresh folder)."""
    return lambda *overrides, out=tmp_path / "out": cli_config("stage=study", *SMOKE, f"study.out_dir={out}", *overrides)
