"""Command-line entry point: `python -m synthmed_lightning stage=<name> [hydra overrides]`.

Thin on purpose: check the command line, compose the config with Hydra, validate it,
and hand it to the stage's runner. Errors the user can fix print as one line, exit code 2.
"""

import errno
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from synthmed_lightning.config import check_command_line, check_settings_exist, register_configs, validate
from synthmed_lightning.errors import UserError
from synthmed_lightning.resources import config_dir


# Errors of the disk rather than of the code: a full disk, a read-only or missing folder.
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}


def _fail(error: Exception | str) -> None:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> dict | None:
    from synthmed_lightning.stages import run_stage

    _log_once_through_hydra()
    try:
        validate(cfg)
        return run_stage(cfg)
    except UserError as error:
        _fail(error)
    except OSError as error:
        if error.errno not in _DISK_ERRORS:
            raise
        _fail(f"{error.filename or 'the run directory'}: {error.strerror} (files written before are kept)")


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


def main() -> None:
    register_configs()
    arguments = sys.argv[1:]
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
