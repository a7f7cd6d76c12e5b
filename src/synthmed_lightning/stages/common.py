"""What every stage runner shares: building the data, model, loggers and trainer from the
config, resolving checkpoints, and writing the run directory's files."""

import logging
from pathlib import Path

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig

from synthmed_lightning.checkpoints import check_resumable
from synthmed_lightning.config import process_count
from synthmed_lightning.data.datamodule import VesselDataModule
from synthmed_lightning.errors import CheckpointError, ConfigError
from synthmed_lightning.loggers import default_wandb_offline
from synthmed_lightning.models.components.registry import UnknownNetworkError
from synthmed_lightning.models.dp import plan_dp
from synthmed_lightning.speed import speed_options
from synthmed_lightning.utils import to_primitive

log = logging.getLogger(__name__)


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def instantiate_primitive(node, **extra):
    """Like hydra's instantiate, but nested `_target_` dicts stay plain dicts (e.g. a LightningModule's
    `net`), so the module can store them as hyperparameters and rebuild itself from a checkpoint."""
    kwargs = {**to_primitive(node), **extra}
    target = kwargs.pop("_target_")
    try:
        return get_class(target)(**kwargs)
    except UnknownNetworkError as error:
        raise ConfigError(f"model.{error}") from None


def plan_privacy(cfg: DictConfig, datamodule, images: int, sensitivity: float = 1.0) -> dict | None:
    """The resolved DP-SGD plan of `privacy=dp` (None for privacy=none) for a GAN stage of
    `trainer.max_steps / 2` iterations on `images` training images; the datamodule then draws
    Poisson batches. Returned as the plain dict the LightningModule keeps as a hyperparameter."""
    plan = plan_dp(to_primitive(cfg.get("privacy") or {}), records=images, batch_size=datamodule.batch_size,
                   steps=int(cfg.trainer.max_steps) // 2, sensitivity=sensitivity)
    if plan is None:
        return None
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
    if devices not in (1, "1", "auto") or nodes != 1:
        raise ConfigError(f"privacy=dp runs on one device (trainer.devices={devices}, trainer.num_nodes={nodes})")
    datamodule.poisson_sample_rate = plan.sample_rate
    return plan.to_dict()


def under_privacy(cfg: DictConfig) -> bool:
    """Whether the run trains under a privacy mode (privacy=dp): then nothing may be fitted on the real
    data outside DP-SGD (Stage I's refiner, edge fade and fitted width cap; the painter's photo fits
    and vessel critic)."""
    return (cfg.get("privacy") or {}).get("mode", "none") != "none"


def build_datamodule(cfg: DictConfig, **overrides) -> VesselDataModule:
    return instantiate_primitive(cfg.data, **overrides)


def build_loggers(cfg: DictConfig) -> list:
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None and "_target_" in c]
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        default_wandb_offline()
    for lg in loggers:
        lg.log_hyperparams(to_primitive(cfg))
    return loggers


def build_trainer(cfg: DictConfig, callbacks: list | None = None, **overrides) -> L.Trainer:
    loggers = build_loggers(cfg)
    configured = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]
    if not loggers:  # logger=none: the learning-rate monitor has nowhere to write (Lightning would refuse it)
        configured = [c for c in configured if not isinstance(c, LearningRateMonitor)]
    configured.append(speed_options(cfg.get("speed")))
    try:
        return instantiate(cfg.trainer, callbacks=configured + list(callbacks or []), logger=loggers or False, **overrides)
    except InstantiationException as error:  # e.g. trainer=gpu on a machine without a GPU
        cause = error.__cause__ or error
        if not isinstance(cause, (MisconfigurationException, ValueError, TypeError, ImportError)):  # ImportError: accelerator=tpu
            raise
        raise ConfigError(f"trainer: {str(cause).strip().splitlines()[0]}") from None


_DDP_FOR_GANS = {s: f"{s}_find_unused_parameters_true" for s in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")}


def gan_strategy(trainer_cfg) -> object:
    """The trainer strategy a GAN stage runs with. Each manual_backward all-reduces gradients, and the
    D step leaves G without any (docs/pitfalls.md), so DDP must look for unused parameters: plain DDP
    variants become their find_unused_parameters_true twins, and so does `auto` when the trainer
    starts several processes (Lightning would pick plain `ddp` there). Anything else (auto on one
    device, a strategy object) is kept."""
    strategy = trainer_cfg.get("strategy", "auto")
    if strategy == "auto" and process_count(trainer_cfg) > 1:
        strategy = "ddp"
    return _DDP_FOR_GANS.get(strategy, strategy) if isinstance(strategy, str) else strategy


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`ckpt_path=last` means this run directory's last checkpoint, when there is one: so one command
    (with a fixed `hydra.run.dir`) both starts a run and, after a crash, resumes it."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        last = run_dir(cfg) / "checkpoints" / "last.ckpt"
        if not last.is_file():
            log.info("ckpt_path=last: no %s yet, starting from scratch", last)
        return str(last) if last.is_file() else None
    return ckpt_path


def fit(trainer: L.Trainer, model: L.LightningModule, datamodule, cfg: DictConfig) -> int:
    """`trainer.fit`, resuming from `ckpt_path` when given: the checkpoint is checked first (this
    stage's, weights that fit this config: one-line errors) and loaded with `weights_only=True`.
    Lightning restores the global step, optimizers, LR schedulers, callbacks' state and the module's
    buffers (the EMA generator). Returns the global step the run started from (0 for a fresh run)."""
    ckpt_path = resolve_ckpt_path(cfg)
    start_step = 0
    if ckpt_path:
        checkpoint = check_resumable(ckpt_path, cfg.stage, model)
        start_step = int(checkpoint.get("global_step", 0))
        _check_schedule_length(checkpoint, trainer, ckpt_path)
        saved = checkpoint.get("hyper_parameters")
        _warn_changed_hparams(saved if isinstance(saved, dict) else {}, dict(model.hparams))
        log.info("Resuming from %s at global step %d", ckpt_path, start_step)
        del checkpoint
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    return start_step


def _check_schedule_length(checkpoint: dict, trainer: L.Trainer, ckpt_path: str) -> None:
    """A one-cycle LR schedule (segment) is laid out over the whole budget and cannot be stretched:
    resuming with another trainer.max_steps would fail at its old last step with a traceback."""
    for scheduler in checkpoint.get("lr_schedulers") or []:
        total = scheduler.get("total_steps") if isinstance(scheduler, dict) else None
        if total is not None and trainer.max_steps not in (-1, total):
            raise CheckpointError(f"checkpoint {ckpt_path} follows a one-cycle LR schedule of {total} steps, which cannot "
                                  f"be stretched to trainer.max_steps={trainer.max_steps}: resume with the budget it "
                                  f"started with, trainer.max_steps={total}")


def _warn_changed_hparams(saved: dict, current: dict) -> None:
    """Settings that differ from the checkpoint's are used from here on (the optimizer's learning rate
    is the checkpoint's, though: its state is restored): say so, since it is rarely intended."""
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if changed:
        log.warning("Resuming with settings that differ from the checkpoint's: %s",
                    ", ".join(f"model.{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:5]))


def scalar_metrics(metrics: dict, prefixes: tuple[str, ...]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefixes)}
