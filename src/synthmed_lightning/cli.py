"""Command-line entry point: `python -m synthmed_lightning stage=<name> [hydra overrides]`.

Thin on purpose: check the command line, compose the config with Hydra, validate it,
and hand it to the stage's runner. Errors the user can fix print as one line, exit code 2.
`--help` answers from two YAML files, before Hydra composes anything and without torch.
"""

import errno
import string
import sys
import textwrap
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from synthmed_lightning.config import (GROUPS, check_command_line, check_settings_exist, group_options, plain_overrides,
                                       register_configs, validate)
from synthmed_lightning.console import quiet_known_noise, show_config, uses_wandb
from synthmed_lightning.errors import ConfigError, UserError
from synthmed_lightning.resources import config_dir


# Errors of the disk rather than of the code: a full disk, a read-only or missing folder.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def _fail(error: Exception | str) -> None:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> dict | float | None:
    quiet_known_noise(uses_wandb=uses_wandb(cfg))  # here, not in main(): a launcher's job runs only this
    try:
        validate(cfg)  # before importing the stages (Lightning: seconds), so a bad setting answers at once
        _log_once_through_hydra()
        show_config(cfg)
        from synthmed_lightning.stages import run_stage

        return _objective(cfg, run_stage(cfg))
    except UserError as error:
        _fail(error)
    except OSError as error:
        if error.errno not in _DISK_ERRORS:
            raise
        _fail(f"{error.filename or 'the run directory'}: {error.strerror} (files written before are kept)")


def _objective(cfg: DictConfig, metrics: dict | None) -> dict | float | None:
    """The task function's return: the stage's metrics, or, where `optimized_metric` is set (by
    `hparams_search=<name>`), that one metric as a float, which Hydra's Optuna sweeper optimises."""
    name = cfg.get("optimized_metric")
    if not name:
        return metrics
    if not metrics or name not in metrics:
        raise ConfigError(f"optimized_metric={name}: stage={cfg.stage} reported no such metric "
                          f"(it reported: {', '.join(sorted(metrics or {})) or 'none'})")
    return float(metrics[name])


def _log_once_through_hydra() -> None:
    """Lightning gives its logger a console handler of its own; Hydra's root logger already prints
    (and writes the run's log file), so without this every Lightning message shows twice."""
    import logging

    import lightning.pytorch  # noqa: F401  (adds those handlers on import)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
            logger.propagate = True  # Lightning turned propagation off when it added its handler


class _EarlierRunRecord:
    """Hydra writes `.hydra/{config,hydra,overrides}.yaml` into the run directory before the stage
    starts. Rerun into an existing `hydra.run.dir`, a run that then fails would leave the earlier
    run's outputs beside a record of the failed settings: keep the earlier record and put it back."""

    def __init__(self, arguments: list[str]):
        run_dir = next((a.split("=", 1)[1] for a in arguments if a.startswith("hydra.run.dir=")), None)
        self.folder = Path(run_dir.strip("'\"")) / ".hydra" if run_dir and "-m" not in arguments else None
        self.files = {}
        if self.folder is not None and self.folder.is_dir():
            self.files = {p.name: p.read_bytes() for p in self.folder.iterdir() if p.is_file() and not p.is_symlink()}

    def restore(self) -> None:
        for name, content in self.files.items():
            (self.folder / name).write_bytes(content)


def help_page() -> str:
    """The `--help` page: Hydra's help config (conf/hydra/help/, chosen in config.yaml's defaults) with the
    config groups filled in. Printed here rather than by Hydra, whose printer also lists the private `_*`
    options and takes seconds to do it; reading two YAML files takes milliseconds."""
    defaults = _default_options()
    help_config = OmegaConf.load(config_dir() / "hydra" / "help" / f"{defaults['hydra/help']}.yaml")
    template = OmegaConf.create({"hydra": {"help": help_config}}).hydra.help.template  # resolves ${hydra.help.*}
    groups = []
    for group in (*GROUPS, "experiment", "hparams_search"):
        options = group_options(group)
        # Stages have their own list; one option is no choice where the group has a default (none is one).
        if group == "stage" or (len(options) < 2 and defaults.get(group)):
            continue
        default = defaults.get(group) or ("the stage's" if group == "model" else "none")
        groups.append(textwrap.fill(f"{', '.join(options)} (default: {default})", width=100, initial_indent=f"  {group:<14} ",
                                    subsequent_indent=" " * 17, break_on_hyphens=False))
    return string.Template(template).safe_substitute(APP_CONFIG_GROUPS="\n".join(groups)).rstrip()


def _default_options() -> dict:
    """{group: option} of config.yaml's defaults list (`override hydra/help: x` gives `hydra/help`)."""
    entries = OmegaConf.to_container(OmegaConf.load(config_dir() / "config.yaml"))["defaults"]
    return {key.removeprefix("override ").removeprefix("optional "): value
            for entry in entries if isinstance(entry, dict) for key, value in entry.items()}


def main() -> None:
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print(help_page())
        return
    register_configs()
    # Hydra, and Lightning when it starts the other DDP processes, read sys.argv: both see the plain form.
    sys.argv[1:] = arguments = plain_overrides(sys.argv[1:])
    try:
        check_command_line(arguments)
        check_settings_exist(arguments)
    except UserError as error:
        _fail(error)
    earlier = _EarlierRunRecord(arguments)
    try:
        _hydra_main()
    except BaseException:  # a one-line error (SystemExit 2), Hydra's report of a crash (SystemExit 1), Ctrl-C
        earlier.restore()
        raise


if __name__ == "__main__":
    main()
