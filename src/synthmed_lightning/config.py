"""Config checks that turn the settings users mistype most into one-line errors.

Hydra's own errors for an unknown group option or a wrong type are several lines long and
end in a hint about HYDRA_FULL_ERROR; these checks run first and name the setting instead.
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, ValidationError

from synthmed_lightning.errors import ConfigError
from synthmed_lightning.resources import config_dir, experiments_dir

# Imported inside the functions that need them: the command-line checks (a misspelt stage, --help)
# answer before torch and Lightning load, which takes seconds.

GROUPS = ("stage", "data", "model", "trainer", "speed", "logger", "callbacks", "profile", "debug", "paths", "privacy")


def gan_max_steps(iterations) -> int:
    """Lightning counts one global step per optimizer: a GAN iteration (D step + G step) is 2."""
    return -1 if int(iterations) < 0 else 2 * int(iterations)


def fast_precision() -> str:
    """`bf16-mixed` where this machine computes bfloat16 natively (a CUDA GPU that supports it, or a
    CPU whose oneDNN has bf16 kernels: AVX512-BF16 or AMX), else `32-true`.

    On such a CPU the quick profile's U-Net step runs about 2x faster in bf16; elsewhere bf16 is
    emulated and slower, hence the check rather than a fixed setting.
    """
    import torch

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32-true"


def input_channels(mode: str) -> int:
    """The `channels` resolver: channels the network sees for a preprocessing mode (data/transforms.py)."""
    from synthmed_lightning.data.transforms import input_channels as channels

    return channels(mode)


for _name, _resolver in (("channels", input_channels), ("gan_max_steps", gan_max_steps),
                         ("fast_precision", fast_precision)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


def group_options(group: str) -> list[str]:
    """The names usable as `group=<name>`: YAML files of conf/<group> (and experiments/)."""
    folder = experiments_dir() if group == "experiment" else config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_"))


# Settings naming a folder the run writes into: checked before Hydra, which would create the run
# directory with a traceback when it cannot.
OUTPUT_SETTINGS = ("hydra.run.dir", "hydra.sweep.dir", "paths.log_dir", "out_dir")


def check_writable(path: str | Path, key: str) -> None:
    """`path` exists as a writable folder, or can be created: its nearest existing parent is a writable folder."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{key}={path}: cannot create it, {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}={path}: {existing} is not writable")


def check_command_line(arguments: list[str]) -> None:
    """Reject `group=unknown` and unwritable output folders before Hydra composes anything."""
    for argument in arguments:
        key, _, value = argument.lstrip("+").partition("=")
        if key in OUTPUT_SETTINGS and value and "$" not in value:
            check_writable(value, key)
        match = re.fullmatch(r"\+{0,2}(\w+)=(.*)", argument)
        if not match or match.group(1) not in (*GROUPS, "experiment", "hparams_search"):
            continue
        group, values = match.groups()
        for value in values.split(","):  # multirun sweeps: stage=segment,evaluate
            value = value.strip()
            if value and value != "null" and value not in group_options(group):
                raise ConfigError(f"unknown {group} '{value}': expected one of {', '.join(group_options(group))}")


def check_settings_exist(arguments: list[str]) -> None:
    """Compose the config once before Hydra runs, so that a setting the config does not have fails
    in one line (Hydra's own message spans five). Sweeps (-m) are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    if any(a in ("-m", "--multirun") for a in arguments):
        return
    overrides = [a for a in arguments if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            compose("config", overrides=overrides)
    except HydraException as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        missing = re.fullmatch(r"Could not override '(.+)'\.", lines[0]) if lines else None
        if missing:
            raise ConfigError(f"{missing.group(1)}: no such setting (a typo?); to add a new one, write "
                              f"+{missing.group(1)}=...") from None
        raise ConfigError(lines[0] if lines else str(error)) from None
    finally:
        GlobalHydra.instance().clear()


def plain_overrides(arguments: list[str]) -> list[str]:
    """`+experiment=<name>` (and `++`) as `experiment=<name>`: config.yaml's defaults list has the group
    (`experiment: null`), where Hydra refuses to add it again; the `+` form is in older notes and scripts."""
    return [re.sub(r"^\+{1,2}(?=experiment=)", "", a) for a in arguments]


def register_configs() -> None:
    """Make each experiments/<name>.yaml usable as `experiment=<name>` (config.yaml's defaults list has the group).

    The experiments live at the top of the project (not inside conf/) so they are easy to find;
    the ConfigStore puts them into Hydra's `experiment` group.
    """
    store = ConfigStore.instance()
    for path in sorted(experiments_dir().glob("*.yaml")):
        store.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")


@dataclass
class PreprocessSchema:
    mode: str = "rgb"
    clahe: bool = False


@dataclass
class DataSchema:
    """Typed view of the settings every data config shares (unknown extra keys are allowed)."""

    name: str = "phantom"
    root: Any = None
    patch_size: int = 128
    batch_size: int = 8
    patches_per_epoch: int = 800
    val_count: int = 4
    split_seed: int = 0
    fov_diameter: float | None = None
    num_workers: Any = "auto"
    pin_memory: Any = "auto"
    preprocess: PreprocessSchema = field(default_factory=PreprocessSchema)


def validate(cfg: DictConfig) -> None:
    """Types and ranges of the common settings; the readers check paths and files themselves."""
    def whole(value) -> bool:  # YAML true/false are ints to Python, not budgets or seeds
        return isinstance(value, int) and not isinstance(value, bool)

    # Checked first, before anything resolves `${gan_max_steps:...}` from them. seed: the range numpy
    # and Lightning's seed_everything accept (outside it, a traceback from deep in the stage).
    seed = cfg.get("seed")
    if not whole(seed) or not 0 <= seed <= 2**32 - 1:
        raise ConfigError(f"seed={seed}: must be an integer from 0 to {2**32 - 1}")
    if cfg.get("print_config", "auto") not in (True, False, "auto"):
        raise ConfigError(f"print_config={cfg.print_config}: must be true, false or auto")
    # A budget below 1 trains without end (gan_max_steps maps negative iterations to max_steps=-1)
    # or not at all; every stage's budget is checked, whichever stage runs.
    for section, settings in (cfg.get("profile") or {}).items():
        for key in ("iterations", "max_steps", "val_every"):
            if isinstance(settings, DictConfig) and key in settings and not (whole(settings[key]) and settings[key] >= 1):
                raise ConfigError(f"profile.{section}.{key}={settings[key]}: must be an integer >= 1")
    # -1 (the trainer config's default) means "no step limit": only stages that do not train may keep it.
    try:
        max_steps = OmegaConf.select(cfg, "trainer.max_steps", default=-1)
    except Exception as error:  # a broken interpolation names the key in its first line
        raise ConfigError(f"trainer.max_steps: {str(error).splitlines()[0]}") from None
    training = cfg.get("stage") in ("segment", "mask", "image", "single")
    if not whole(max_steps) or max_steps < -1 or max_steps == 0 or (training and max_steps < 1):
        raise ConfigError(f"trainer.max_steps={max_steps}: must be an integer >= 1"
                          + (f" (stage={cfg.stage} trains for that many optimizer steps)" if training else " or -1"))
    # Counts the Trainer accepts unchecked: a string would fail in the middle of fit with a traceback.
    for key in ("max_epochs", "check_val_every_n_epoch", "log_every_n_steps", "num_sanity_val_steps", "num_nodes"):
        value = OmegaConf.select(cfg, f"trainer.{key}", default=None)
        if value is not None and not whole(value):
            raise ConfigError(f"trainer.{key}={value}: must be an integer")
    schema = OmegaConf.structured(DataSchema)
    OmegaConf.set_struct(schema, False)
    try:
        typed = OmegaConf.merge(schema, OmegaConf.to_container(cfg.data, resolve=True))
    except ValidationError as error:
        raise ConfigError(f"data.{error.full_key}: {error.msg.splitlines()[0]}") from None
    except Exception as error:  # interpolation or missing-value errors name the key too
        raise ConfigError(str(error).splitlines()[0]) from None
    for key in ("patch_size", "batch_size", "patches_per_epoch"):
        if typed[key] <= 0:
            raise ConfigError(f"data.{key}={typed[key]}: must be a positive integer")
    if typed.val_count < 0:
        raise ConfigError(f"data.val_count={typed.val_count}: must be 0 or more")
    if typed.fov_diameter is not None and typed.fov_diameter <= 0:
        raise ConfigError(f"data.fov_diameter={typed.fov_diameter}: must be positive (pixels) or null")
    # Before the checks below import torch and Lightning (seconds): these errors answer at once.
    # A stage marks what it cannot run without as `???`: name all of it at once.
    missing = [f"{key}=<value>" for key in cfg if OmegaConf.is_missing(cfg, key)]
    if cfg.get("stage") == "generate" and not any(cfg.get(k) for k in ("mask_ckpt", "image_ckpt", "single_ckpt")):
        missing.insert(0, "mask_ckpt=<stage=mask checkpoint> image_ckpt=<stage=image checkpoint> (or single_ckpt=...)")
    if missing:
        raise ConfigError(f"stage={cfg.stage} needs {' '.join(missing)}")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path not in (None, "last") and not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path={ckpt_path}: file not found")
    from synthmed_lightning.data.loading import check_loader_settings
    from synthmed_lightning.speed import speed_options

    input_channels(typed.preprocess.mode)
    check_loader_settings(typed.num_workers, typed.pin_memory)
    speed_options(cfg.get("speed"))
    net = OmegaConf.select(cfg, "model.net")
    if net is not None and "depth" in net and typed.patch_size % (2 ** net.depth):
        raise ConfigError(f"data.patch_size={typed.patch_size} must be a multiple of 2**model.net.depth={2 ** net.depth}")
    _check_distributed(cfg)


def process_count(trainer) -> int:
    """How many training processes Lightning starts for a trainer config: devices per node (an int, a
    list or "0,1" of device ids, or -1 / "auto" for every GPU) times `num_nodes`. With more than one,
    Lightning's `strategy: auto` becomes DDP."""
    devices, accelerator = trainer.get("devices", 1), str(trainer.get("accelerator", "auto"))
    if devices in (-1, "-1", "auto"):
        import torch

        per_node = 1 if accelerator == "cpu" or not torch.cuda.is_available() else torch.cuda.device_count()
    elif isinstance(devices, str):
        per_node = int(devices) if devices.strip().isdigit() else len([d for d in devices.split(",") if d.strip()])
    elif isinstance(devices, int):
        per_node = devices
    else:  # a list of device ids
        per_node = len(devices)
    return max(1, per_node) * int(trainer.get("num_nodes", 1) or 1)


def _check_distributed(cfg: DictConfig) -> None:
    """Lightning's subprocess DDP re-runs the whole command line, so under `-m` every rank would
    re-run the whole sweep (docs/pitfalls.md): refuse that combination with the way out."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    trainer = cfg.get("trainer") or {}
    if process_count(trainer) == 1 or not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return
    strategy = str(trainer.get("strategy", "auto"))
    # Under SLURM (hydra/launcher=slurm) the scheduler starts one task per device and Lightning
    # launches nothing: that is the way distributed sweeps are meant to run.
    scheduled = "SlurmLauncher" in str(OmegaConf.select(HydraConfig.get(), "launcher._target_") or "")
    # `auto` with several processes is Lightning's subprocess DDP too.
    if (strategy == "auto" or strategy.startswith("ddp")) and "spawn" not in strategy and not scheduled:
        raise ConfigError(f"trainer.devices={trainer.get('devices')} (trainer.strategy={strategy}, DDP in subprocesses) "
                          "with --multirun would re-run the whole sweep in every process: add "
                          "trainer.strategy=ddp_spawn (or use hydra/launcher=slurm) for distributed sweeps")
