"""Where the packaged configs live: inside the wheel, or at the top of a source checkout."""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parents[1] / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"synthmed_lightning: cannot find its '{name}/' folder near {_PACKAGE_DIR}")


def config_dir() -> Path:
    return _find("conf")


def experiments_dir() -> Path:
    return _find("experiments")
