"""Small helpers every layer may use: atomic JSON files, plain copies of configs, the device
to run on, and a progress bar. They import nothing else of this package but `errors`."""

import json
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from synthmed_lightning.errors import ConfigError


def write_json(path: Path, values: dict) -> None:
    """Atomic write: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def to_primitive(node) -> dict:
    """Resolved plain-Python copy of a config node: what checkpoints may store (`weights_only`
    loading refuses OmegaConf containers, docs/pitfalls.md)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def resolved_config(cfg: DictConfig) -> dict:
    """The config as plain data for a manifest, resolved where it can be."""
    try:
        return to_primitive(cfg)
    except Exception:  # an interpolation that only resolves inside a Hydra app (paths.output_dir)
        return OmegaConf.to_container(cfg, resolve=False)


def pick_device(name: str) -> torch.device:
    """`auto` (CUDA when there is one), `cpu`, `cuda` or `cuda:N`; ConfigError for anything else."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: no CUDA device here (use device=cpu or auto)")
    return device


def progress_bar(description: str) -> Progress:
    """A rich progress bar on stderr with a count and the time remaining."""
    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True))
