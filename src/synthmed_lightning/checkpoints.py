"""Loading our own Lightning checkpoints safely (`weights_only=True`: no code runs on load) and
checking they come from the stage the caller expects."""

import types
import typing
from pathlib import Path

import torch

from synthmed_lightning.errors import CheckpointError

STAGE_KEY = "synthmed_stage"


def load_checkpoint(path: str | Path, expected_stage: str) -> dict:
    """The checkpoint dict, after checking its file, its format and its stage."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or non-checkpoint files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {first_line}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    stage = checkpoint.get(STAGE_KEY)
    if stage != expected_stage:
        raise CheckpointError(f"checkpoint {path} comes from stage={stage or 'unknown'}, expected a stage={expected_stage} checkpoint")
    return checkpoint


def restore_module(module_class, checkpoint: dict, source: str | Path = "the checkpoint"):
    """Rebuild a LightningModule from its saved hyperparameters and load its weights.

    The hyperparameters are data from elsewhere: each must have the type the constructor declares,
    and networks are built only from this package's own classes (`models/components/registry.py`),
    so a crafted checkpoint can name nothing that runs."""
    from synthmed_lightning.models.components.registry import UnknownNetworkError

    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or not all(isinstance(k, str) for k in hparams):
        raise CheckpointError(f"{source} holds no hyper_parameters to rebuild its {module_class.__name__} from")
    wrong = _wrongly_typed(module_class, hparams)
    if wrong:
        raise CheckpointError(f"{source}: hyperparameter {wrong}: not a checkpoint this version wrote")
    try:
        module = module_class(**hparams)
    except UnknownNetworkError as error:
        raise CheckpointError(f"{source} was refused: {error}") from None
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint settings do not fit this version's {module_class.__name__}: {error}") from None
    missing, unexpected = _key_mismatch(module.state_dict(), checkpoint["state_dict"])
    if missing or unexpected:
        raise CheckpointError(f"checkpoint weights do not fit this version's {module_class.__name__}: "
                              f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})")
    module.on_load_checkpoint(checkpoint)  # as Lightning does: e.g. the segmenter's validation-chosen threshold
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, TypeError) as error:  # a tensor of another shape, or not a tensor at all
        raise CheckpointError(f"checkpoint weights do not fit this version's {module_class.__name__}: "
                              f"{str(error).strip().splitlines()[-1].strip()}") from None
    return module


def load_module(module_class, path: str | Path, expected_stage: str):
    """The LightningModule a checkpoint of `expected_stage` holds, checked and rebuilt (CheckpointError otherwise)."""
    return restore_module(module_class, load_checkpoint(path, expected_stage), source=path)


def _wrongly_typed(module_class, hparams: dict) -> str | None:
    """`name=value` of the first hyperparameter whose value does not have its declared type."""
    hints = typing.get_type_hints(module_class.__init__)
    for key, value in hparams.items():
        if key in hints and not _has_type(value, hints[key]):
            return f"{key}={value!r}"[:120]
    return None


def _has_type(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_has_type(v, a) for v, a in zip(value, args))
        return not args or all(_has_type(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def check_resumable(path: str | Path, expected_stage: str, module) -> dict:
    """The checkpoint a training run resumes from, after checking that it comes from this stage and
    that its weights fit the network this run's config builds (same names, same shapes). Lightning
    would otherwise fail deep inside `load_state_dict` with a long traceback."""
    checkpoint = load_checkpoint(path, expected_stage)
    expected = module.state_dict()
    missing, unexpected = _key_mismatch(expected, checkpoint["state_dict"])
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path} was trained with another config: {len(missing)} weights missing "
                              f"(e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]}); "
                              "resume with the settings it was trained with")
    for key, tensor in checkpoint["state_dict"].items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"checkpoint {path} was trained with another config: {key} is "
                                  f"{tuple(tensor.shape)} there, {tuple(expected[key].shape)} with this run's settings; "
                                  "resume with the settings it was trained with")
    return checkpoint


def _key_mismatch(expected: dict, found: dict) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
