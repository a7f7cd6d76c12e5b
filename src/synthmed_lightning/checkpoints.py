"""Loading our own Lightning checkpoints safely (`weights_only=True`: no code runs on load) and
checking they come from the stage the caller expects."""

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


def restore_module(module_class, checkpoint: dict):
    """Rebuild a LightningModule from its saved hyperparameters and load its weights."""
    try:
        module = module_class(**checkpoint["hyper_parameters"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint settings do not fit this version's {module_class.__name__}: {error}") from None
    missing, unexpected = _key_mismatch(module.state_dict(), checkpoint["state_dict"])
    if missing or unexpected:
        raise CheckpointError(f"checkpoint weights do not fit this version's {module_class.__name__}: "
                              f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})")
    module.load_state_dict(checkpoint["state_dict"])
    return module


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
