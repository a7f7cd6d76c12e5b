"""What every stage runner shares: building the data, model, loggers and trainer from the
config, resolving checkpoints, and writing the run directory's files."""

import json
import logging
import os
import sys
from pathlib import Path

import lightning as L
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from synthmed_lightning.data.datamodule import VesselDataModule
from synthmed_lightning.speed import speed_options

log = logging.getLogger(__name__)


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def to_primitive(node) -> dict:
    """Resolved plain-Python copy of a config node: what checkpoints may store (PITFALLS.md)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def instantiate_primitive(node, **extra):
    """Like hydra's instantiate, but nested `_target_` dicts stay plain dicts (e.g. a LightningModule's
    `net`), so the module can store them as hyperparameters and rebuild itself from a checkpoint."""
    kwargs = {**to_primitive(node), **extra}
    target = kwargs.pop("_target_")
    return get_class(target)(**kwargs)


def build_datamodule(cfg: DictConfig, **overrides) -> VesselDataModule:
    return instantiate_primitive(cfg.data, **overrides)


def build_loggers(cfg: DictConfig) -> list:
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None and "_target_" in c]
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        _default_wandb_offline()
    for lg in loggers:
        lg.log_hyperparams(to_primitive(cfg))
    return loggers


def _default_wandb_offline() -> None:
    """Without credentials W&B would prompt for a login: log offline instead and say so."""
    has_credentials = os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").is_file()
    if not os.environ.get("WANDB_MODE") and not has_credentials:
        os.environ["WANDB_MODE"] = "offline"
        log.info("No W&B credentials: logging offline (upload later with `wandb sync <run dir>/wandb/offline-run-*`)")


def build_trainer(cfg: DictConfig, callbacks: list | None = None, **overrides) -> L.Trainer:
    configured = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]
    configured.append(speed_options(cfg.get("speed")))
    return instantiate(cfg.trainer, callbacks=configured + list(callbacks or []), logger=build_loggers(cfg) or False,
                       **overrides)


_DDP_FOR_GANS = {s: f"{s}_find_unused_parameters_true" for s in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")}


def gan_strategy(strategy) -> object:
    """The trainer strategy a GAN stage runs with. Each manual_backward all-reduces gradients, and the
    D step leaves G without any (PITFALLS.md): plain DDP variants become their
    find_unused_parameters_true twins; anything else (auto, a strategy object) is kept."""
    return _DDP_FOR_GANS.get(strategy, strategy) if isinstance(strategy, str) else strategy


def resolve_ckpt_path(cfg: DictConfig) -> str | None:
    """`ckpt_path=last` means this run directory's last checkpoint, when there is one."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path == "last":
        last = run_dir(cfg) / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    return ckpt_path


def write_json(path: Path, values: dict) -> None:
    """Atomic write: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def scalar_metrics(metrics: dict, prefixes: tuple[str, ...]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefixes)}


def finish_loggers() -> None:
    """Close the W&B run: a later WandbLogger in this process (multirun) would silently reuse it."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
