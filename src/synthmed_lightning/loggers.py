"""What every run does with its experiment loggers: W&B offline when there are no credentials,
and each W&B run closed at the end of its job."""

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def default_wandb_offline() -> None:
    """Without credentials W&B would prompt for a login: log offline instead and say so."""
    has_credentials = os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").is_file()
    if not os.environ.get("WANDB_MODE") and not has_credentials:
        os.environ["WANDB_MODE"] = "offline"
        log.info("No W&B credentials: logging offline (upload later with `wandb sync <run dir>/wandb/offline-run-*`)")


def finish_loggers() -> None:
    """Close the W&B run: a later WandbLogger in this process (multirun) would silently reuse it."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
