"""What a run prints to the terminal besides its own logs: the composed config as a tree, and not the
library messages known to be harmless.

`quiet_known_noise` silences exactly the messages listed in it, each matched by its own text, so a
new or changed warning from Lightning, torch or W&B still shows.
"""

import logging
import re
import sys
import warnings

from omegaconf import DictConfig, ListConfig, OmegaConf

# Python warnings, matched from the start of the message.
_WARNINGS = (
    # torch deprecated `LeafSpec`; Lightning's _pytree still checks for it. Nothing to act on here.
    re.escape("`isinstance(treespec, LeafSpec)` is deprecated"),
    # The GAN stages keep EMA generators and frozen feature networks in eval mode on purpose.
    r"Found \d+ module\(s\) in eval mode at the start of training",
    # GANs optimise manually: a checkpoint holds the weights after the step, which is what resuming wants.
    re.escape("Using ModelCheckpoint with manual optimization and every_n_train_steps"),
)
# Lightning's advertisement for its hosted logger, logged at INFO on every run.
_LIGHTNING_TIP = "try installing [litlogger]"
_LIGHTNING_RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"
# Lightning's WandbLogger always passes `anonymous`, which W&B has deprecated: it warns on every run.
_WANDB_ANONYMOUS = "The anonymous setting has no effect"


def _drop_lightning_tip(record: logging.LogRecord) -> bool:
    return _LIGHTNING_TIP not in record.getMessage()


def quiet_known_noise(uses_wandb: bool = False) -> None:
    """Silence the known-harmless library messages in this process; call it again freely.

    uses_wandb: also silence W&B's (this imports wandb, so only for runs that log to it)."""
    for pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    logger = logging.getLogger(_LIGHTNING_RANK_ZERO_LOGGER)  # a filter on the emitting logger itself:
    if _drop_lightning_tip not in logger.filters:             # records passed up to a parent skip its filters
        logger.addFilter(_drop_lightning_tip)
    if uses_wandb:
        _quiet_wandb()


def _quiet_wandb() -> None:
    """W&B prints its warnings itself (not through `warnings` or `logging`): wrap `wandb.termwarn`,
    which its settings check calls, to drop the one message."""
    import wandb

    termwarn = wandb.termwarn
    if getattr(termwarn, "quiet_known_noise", False):
        return

    def quiet_termwarn(string, *args, **kwargs):
        if not str(string).startswith(_WANDB_ANONYMOUS):
            termwarn(string, *args, **kwargs)

    quiet_termwarn.quiet_known_noise = True
    wandb.termwarn = quiet_termwarn


def uses_wandb(cfg: DictConfig) -> bool:
    """Whether the run's loggers include W&B."""
    return any("Wandb" in str(node.get("_target_", "")) for node in (cfg.get("logger") or {}).values()
               if isinstance(node, DictConfig))


def wants_config_tree(setting) -> bool:
    """`print_config`: true, false, or auto (only when the output is a terminal: a log file, such as a
    study step's, stays short; the run directory keeps the config in .hydra/config.yaml anyway)."""
    if setting == "auto":
        return sys.stdout.isatty()
    return bool(setting)


def show_config(cfg: DictConfig) -> None:
    """Print the config tree at the start of a run if `print_config` asks for it, on rank 0 only (the other
    DDP processes re-run the same command line)."""
    if not wants_config_tree(cfg.get("print_config", "auto")):
        return
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        print_config_tree(cfg)


def print_config_tree(cfg: DictConfig, file=None) -> None:
    """The composed config as a Rich tree: one branch per top-level key, values resolved where they can be."""
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.text import Text
    from rich.tree import Tree

    tree = Tree(Text("config", style="bold"), guide_style="dim")
    for key in cfg:
        try:
            value = cfg[key]  # resolves a scalar's interpolation; a section stays a node
        except Exception:  # one that cannot resolve (yet): show it as written
            value = OmegaConf.to_container(cfg, resolve=False)[key]
        if isinstance(value, (dict, list)):
            value = OmegaConf.create(value)
        if isinstance(value, (DictConfig, ListConfig)):
            tree.add(Text(str(key), style="bold")).add(Syntax(_yaml(value), "yaml", background_color="default", word_wrap=True))
        else:
            tree.add(Text.assemble((str(key), "bold"), ": ", _scalar(value)))
    Console(file=file or sys.stdout, soft_wrap=True).print(tree)


def _yaml(node) -> str:
    try:
        return OmegaConf.to_yaml(node, resolve=True).rstrip()
    except Exception:  # an interpolation that cannot resolve (yet): show it as written
        return OmegaConf.to_yaml(node).rstrip()


def _scalar(value) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)
