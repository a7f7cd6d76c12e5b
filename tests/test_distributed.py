"""Distributed runs through Lightning's own strategies, on CPU processes (`trainer=ddp_cpu`), and the
Hydra launchers for clusters (`hydra/launcher=slurm`, its local twin `hydra/launcher=local`)."""

import json
from pathlib import Path

import pytest
import torch

from helpers import PROJECT_ROOT, SMOKE, assert_ok, compose_config, run_cli
from synthmed_lightning.checkpoints import load_checkpoint


def _only_run_dir(cwd: Path, stage: str) -> Path:
    """The run directory a command without hydra.run.dir made under `<cwd>/outputs/<stage>/`."""
    runs = [p for p in (cwd / "outputs" / stage).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["mask", "image", "single"])
def test_gan_stage_on_two_devices_as_advertised(tmp_path, stage):
    """`python -m synthmed_lightning stage=<gan> trainer.devices=2` exactly as the README has it (the
    default trainer, strategy auto; only profile=smoke added, plus a probe that records each rank).
    Two processes, manual optimisation with two optimizers: both ranks see different batches, yet
    every parameter (G and D) ends bit-identical on both (gradients all-reduced in each
    manual_backward); the checkpoint holds those weights, and rank 1 writes no file. BatchNorm running
    statistics are buffers, updated from each rank's own last batch, so they are not compared."""
    probe = tmp_path / "probe"
    assert_ok(run_cli(f"stage={stage}", "trainer.devices=2", "profile=smoke",
                      "+callbacks.probe._target_=tests.ddp_probe.RankProbe", f"+callbacks.probe.out_dir={probe}",
                      cwd=tmp_path, env={"PYTHONPATH": str(PROJECT_ROOT)}))
    out = _only_run_dir(tmp_path, stage)
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["first_batch"] != ranks[1]["first_batch"]  # each rank trained on its own data
    weights = [torch.load(probe / f"rank{r}.pt") for r in (0, 1)]
    assert any(k.startswith("generator.") for k in weights[0]) and any(k.startswith("discriminator.") for k in weights[0])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    saved = load_checkpoint(out / "checkpoints" / "last.ckpt", stage)["state_dict"]
    assert all(torch.equal(saved[k], weights[0][k]) for k in weights[0])
    assert ranks[1]["checkpoint"] == 0 and ranks[1]["png"] == 0
    assert ranks[0]["checkpoint"] >= 1 and ranks[0]["png"] >= 3  # two validations and the final one
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["last.ckpt"]
    metrics = json.loads((out / "metrics.json").read_text())
    iterations = compose_config(f"stage={stage}", "profile=smoke").profile[stage].iterations
    assert metrics["train/iterations"] == iterations


@pytest.mark.slow
def test_segment_on_two_devices_as_advertised(tmp_path):
    assert_ok(run_cli("stage=segment", "trainer.devices=2", "profile=smoke", cwd=tmp_path))
    out = _only_run_dir(tmp_path, "segment")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test/auc"] > 0.8
    # Both ranks tested half of the 6 images each; rank 0 gathered the metric over all of them.
    assert len(list((out / "predictions").glob("*_prob.png"))) == 6
    assert (out / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("trainer", [(), ("trainer=gpu",)])
@pytest.mark.parametrize("devices", [("trainer.devices=4",), ("trainer.devices=[0,1]",), ("trainer.num_nodes=2",)])
def test_several_processes_get_the_gan_strategy(trainer, devices):
    """Whatever starts several processes (devices, a device list, nodes; CPU or GPU trainer) gives the
    GAN stages find-unused-parameters DDP; one device keeps `auto`."""
    from synthmed_lightning.stages.common import gan_strategy

    cfg = compose_config("stage=image", *trainer, *devices)
    assert gan_strategy(cfg.trainer) == "ddp_find_unused_parameters_true"
    assert gan_strategy(compose_config("stage=image", *trainer).trainer) == "auto"
    assert gan_strategy(compose_config("stage=image", "trainer=ddp_cpu").trainer) == "ddp_find_unused_parameters_true"
    assert gan_strategy(compose_config("stage=image", "trainer.strategy=ddp_spawn", *devices).trainer) == \
        "ddp_spawn_find_unused_parameters_true"


def test_slurm_launcher_takes_its_sizes_from_the_trainer():
    """hydra/launcher=slurm asks SLURM for nodes = trainer.num_nodes and one task and GPU per device."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher not installed (pip install -e '.[slurm]')")
    from hydra.core.utils import setup_globals
    from hydra.utils import instantiate

    setup_globals()  # Hydra's `now` resolver, used by the sweep dir
    cfg = compose_config("stage=image", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "hydra/launcher=slurm",
                   "hydra.launcher.partition=gpu")
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    assert launcher.params["nodes"] == 2
    assert launcher.params["tasks_per_node"] == 4 and launcher.params["gpus_per_node"] == 4
    assert launcher.params["partition"] == "gpu" and launcher.params["timeout_min"] > 0


def test_multirun_ddp_is_allowed_under_the_slurm_launcher():
    """SLURM starts the processes, so `-m` with `trainer=ddp` is fine there (and refused otherwise,
    tests/test_cli_errors.py)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher not installed")
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from synthmed_lightning.config import _check_distributed
    from synthmed_lightning.errors import ConfigError

    for launcher, allowed in (("slurm", True), ("local", False)):
        cfg = compose_config("trainer=ddp_cpu", f"hydra/launcher={launcher}")
        with open_dict(cfg):
            cfg.hydra.mode = RunMode.MULTIRUN
        HydraConfig.instance().set_config(cfg)
        try:
            if allowed:
                _check_distributed(cfg)
            else:
                with pytest.raises(ConfigError, match="ddp_spawn"):
                    _check_distributed(cfg)
        finally:
            HydraConfig.instance().cfg = None


@pytest.mark.slow
def test_local_submitit_launcher_runs_a_sweep(tmp_path):
    """hydra/launcher=local: the submitit launcher runs each sweep point as a job (a subprocess here,
    a SLURM job with hydra/launcher=slurm); both points finish with their own run directory."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher not installed (pip install -e '.[slurm]')")
    result = run_cli("-m", "stage=segment", *SMOKE, "hydra/launcher=local", "trainer.max_steps=3", "model.lr=1e-3,2e-3",
                     f"hydra.sweep.dir={tmp_path}")
    assert_ok(result)
    for job in ("0", "1"):
        metrics = json.loads((tmp_path / job / "metrics.json").read_text())
        assert metrics["train/steps"] == 3
    assert (tmp_path / ".submitit").is_dir()  # the jobs went through submitit
