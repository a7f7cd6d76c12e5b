"""The only networks a config or a checkpoint may build.

A LightningModule names its networks as `{"_target_": <class path>, **settings}` dicts, which it
keeps as hyperparameters so that a checkpoint can rebuild them. A checkpoint is data from
elsewhere: if its `_target_` were passed to Hydra's `instantiate`, a crafted file could call any
function (`builtins.open` truncating a file, `shutil.copyfile` planting code). So the target is
looked up in this table of the package's own network classes, and the settings must be plain
values that name nothing to build.
"""

from collections.abc import Mapping

from torch import nn

from synthmed_lightning.models.components.dcgan import DCGANDiscriminator, DCGANGenerator, MultiScaleDiscriminator
from synthmed_lightning.models.components.pix2pix import PatchGANDiscriminator, UNetGenerator
from synthmed_lightning.models.components.refiner import MaskRefiner
from synthmed_lightning.models.components.unet import UNet

NETWORKS: dict[str, type[nn.Module]] = {
    f"{cls.__module__}.{cls.__qualname__}": cls
    for cls in (UNet, UNetGenerator, PatchGANDiscriminator, DCGANGenerator, DCGANDiscriminator, MultiScaleDiscriminator,
                MaskRefiner)
}


class UnknownNetworkError(ValueError):
    """A network spec names something that is not one of this package's networks."""


def build_network(spec: Mapping, role: str) -> nn.Module:
    """The network `spec` describes; `role` (e.g. `net`, `generator`) names it in errors."""
    if not isinstance(spec, Mapping):
        raise UnknownNetworkError(f"{role}: expected a network's settings, got {type(spec).__name__}")
    settings = dict(spec)
    target = settings.pop("_target_", None)
    if target not in NETWORKS:
        raise UnknownNetworkError(f"{role}._target_={target!r} is not one of this package's networks "
                                  f"({', '.join(sorted(name.rsplit('.', 1)[1] for name in NETWORKS))})")
    for key, value in settings.items():
        if not _is_plain(value):
            raise UnknownNetworkError(f"{role}.{key}: expected plain values (numbers, strings, lists), "
                                      f"got {type(value).__name__}")
    return NETWORKS[target](**settings)


def _is_plain(value) -> bool:
    """Numbers, strings, None and lists of them: nothing a builder could turn into a call."""
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))
