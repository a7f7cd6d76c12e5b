"""DCGAN generator and discriminator (Radford et al. 2016), as used for Stage I.

Stage I of Guibas et al. (2017) is a DCGAN that turns noise into a binary
vessel mask. These modules follow pytorch/examples/dcgan but are sized by
``image_size`` so the same code serves 32 px smoke tests and 512 px runs.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

MIN_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 512
UPSAMPLE_MODES = ("resize", "transpose")
OUT_ACTIVATIONS = ("tanh", "sigmoid", "none")


def check_image_size(image_size: int) -> int:
    """Return log2(image_size / 4): the number of 2x stages between 4x4 and the image.

    Only powers of two are allowed because every stage exactly doubles (or halves)
    the resolution, starting from (or ending at) a 4x4 map.
    """
    valid = [2**k for k in range(5, 10)]
    if not isinstance(image_size, numbers.Integral) or isinstance(image_size, bool) or image_size not in valid:
        raise ValueError(
            f"image_size must be a power of two from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} "
            f"({', '.join(map(str, valid))}), got {image_size!r}"
        )
    return int(image_size).bit_length() - 3


def stage_channels(base_channels: int, stage: int, max_channels: int | None = None) -> int:
    """Channels at a given depth: base * 2**stage, capped at ``max_channels`` (default base * 8,
    as in DCGAN)."""
    return min(base_channels * 2**stage, max_channels or base_channels * 8)


def maybe_spectral_norm(layer: nn.Module, enabled: bool) -> nn.Module:
    """Wrap a conv in spectral normalisation (Miyato et al. 2018) when asked."""
    return _spectral_norm(layer) if enabled else layer


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN init, for ``model.apply``: conv/linear ~ N(0, 0.02); BatchNorm weight ~ N(1, 0.02).

    Radford et al. found this init stabilises early training. Biases start at 0.
    With spectral norm the *unnormalised* weight is initialised (the normalised
    one is computed from it on every forward pass).
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        if parametrize.is_parametrized(module, "weight"):
            weight = module.parametrizations.weight.original
        else:
            weight = module.weight
        nn.init.normal_(weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _output_activation(name: str) -> nn.Module:
    """tanh matches data scaled to [-1, 1]; "none" returns raw values (e.g. for a custom loss)."""
    if name == "tanh":
        return nn.Tanh()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name in ("none", None):
        return nn.Identity()
    raise ValueError(f"out_activation must be one of {OUT_ACTIVATIONS}, got {name!r}")


def _upsample_conv(in_ch: int, out_ch: int, mode: str, bias: bool, sn: bool) -> nn.Sequential:
    """Double the resolution.

    "resize" (nearest upsample + 3x3 conv, Odena et al. 2016) avoids the
    checkerboard artifacts of strided transposed convs, which matter for thin
    vessels; "transpose" is the original DCGAN layer.
    """
    if mode == "resize":
        conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=bias)
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), maybe_spectral_norm(conv, sn))
    if mode == "transpose":
        conv = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1, bias=bias)
        return nn.Sequential(maybe_spectral_norm(conv, sn))
    raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {mode!r}")


class DCGANGenerator(nn.Module):
    """Noise z (B, z_dim) -> image (B, out_channels, S, S), by default in [-1, 1].

    z is projected to a 4x4 map with base_channels * 2**(n-1) channels (capped at
    ``max_channels``, default base_channels * 8), then n = log2(S / 4) stages double the resolution while
    halving the channels down to base_channels; the last stage maps to
    out_channels. BatchNorm + ReLU follow every hidden layer. With
    ``spectral_norm`` the convs are also spectrally normalised (BatchNorm stays,
    as in SAGAN/BigGAN generators).
    """

    def __init__(
        self,
        z_dim: int = 100,
        out_channels: int = 1,
        image_size: int = 64,
        base_channels: int = 64,
        upsample: str = "resize",
        spectral_norm: bool = False,
        out_activation: str = "tanh",
        max_channels: int | None = None,
    ) -> None:
        super().__init__()
        n_stages = check_image_size(image_size)
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        self.z_dim = z_dim
        self.out_channels = out_channels
        self.image_size = image_size

        top = stage_channels(base_channels, n_stages - 1, max_channels)
        # A transposed 4x4 conv on a 1x1 map is the DCGAN "project and reshape".
        project = nn.ConvTranspose2d(z_dim, top, kernel_size=4, stride=1, padding=0, bias=False)
        layers: list[nn.Module] = [maybe_spectral_norm(project, spectral_norm), nn.BatchNorm2d(top), nn.ReLU(True)]
        in_ch = top
        for stage in range(n_stages - 2, -1, -1):
            out_ch = stage_channels(base_channels, stage, max_channels)
            layers += [
                _upsample_conv(in_ch, out_ch, upsample, bias=False, sn=spectral_norm),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(True),
            ]
            in_ch = out_ch
        layers += [
            _upsample_conv(in_ch, out_channels, upsample, bias=True, sn=spectral_norm),
            _output_activation(out_activation),
        ]
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Accepts z as (B, z_dim) or (B, z_dim, 1, 1)."""
        if z.dim() == 2:
            z = z[:, :, None, None]
        return self.net(z)

    def sample_noise(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Standard-normal z of shape (n, z_dim), on ``device`` (default: the model's).

        With a ``generator`` the noise is drawn on the generator's device and then
        moved, so a CPU generator gives the same z whatever device the model is on.
        """
        if device is None:
            device = next(self.parameters()).device
        if generator is None:
            return torch.randn(n, self.z_dim, device=device)
        z = torch.randn(n, self.z_dim, generator=generator, device=generator.device)
        return z.to(device)


class DCGANDiscriminator(nn.Module):
    """Image (B, in_channels, S, S) -> one raw logit per image, shape (B,).

    Strided 4x4 convs halve the resolution down to 4x4 while doubling the
    channels (capped at base_channels * 8); a final 4x4 valid conv gives the
    logit. LeakyReLU(0.2) everywhere. BatchNorm is used on all but the first
    layer unless ``spectral_norm`` is set, in which case spectral norm replaces it
    (SN-GAN: BatchNorm in D couples the samples of a batch).

    ``minibatch_std`` appends, before the final conv, the batch's mean feature
    standard deviation as one extra channel (Karras et al. 2018, ProGAN): D can
    then see that a batch of fakes is too alike, which counters mode collapse.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 64,
        base_channels: int = 64,
        spectral_norm: bool = False,
        minibatch_std: bool = False,
        max_channels: int | None = None,
    ) -> None:
        super().__init__()
        n_stages = check_image_size(image_size)
        self.in_channels = in_channels
        self.image_size = image_size

        layers: list[nn.Module] = []
        in_ch = in_channels
        for stage in range(n_stages):
            out_ch = stage_channels(base_channels, stage, max_channels)
            use_bn = stage > 0 and not spectral_norm
            conv = nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1, bias=not use_bn)
            layers.append(maybe_spectral_norm(conv, spectral_norm))
            if use_bn:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.minibatch_std = minibatch_std
        final = nn.Conv2d(in_ch + int(minibatch_std), 1, kernel_size=4, stride=1, padding=0, bias=True)
        self.head = maybe_spectral_norm(final, spectral_norm)
        self.apply(init_dcgan_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"DCGANDiscriminator expects {self.image_size}x{self.image_size} images, "
                f"got {tuple(x.shape[-2:])}"
            )
        features = self.features(x)
        if self.minibatch_std:
            features = append_minibatch_std(features)
        return self.head(features).flatten()


def append_minibatch_std(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C + 1, H, W): the last channel is the mean over features of the
    standard deviation across the batch, the same for every sample."""
    std = features.float().std(dim=0, unbiased=False).mean() if features.shape[0] > 1 else features.new_zeros(())
    return torch.cat([features, std.to(features.dtype).expand(features.shape[0], 1, *features.shape[2:])], dim=1)


class MultiScaleDiscriminator(nn.Module):
    """DCGAN discriminators on the image and on area-downscaled copies (pix2pixHD's multi-scale D).

    At 256 px a single D judges thin-vessel texture well but barely sees the global tree: Stage I
    then collapsed to one periodic vessel texture. A D on a 4x smaller copy sees the whole tree
    (the optic-disc hub, the arcades) at the resolution where DCGANs learn it. ``scales`` are
    downscale factors (1 = full size); the logits of all Ds are concatenated, shape (B * len(scales),),
    so the GAN losses average over them.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 64, base_channels: int = 64,
                 spectral_norm: bool = False, minibatch_std: bool = False, max_channels: int | None = None,
                 scales: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        scales = tuple(int(s) for s in scales)
        if not scales or len(set(scales)) != len(scales) or any(s < 1 or image_size % s for s in scales):
            raise ValueError(f"scales must be distinct divisors of image_size={image_size}, got {list(scales)}")
        self.scales = scales
        self.in_channels = in_channels
        self.image_size = image_size
        self.discriminators = nn.ModuleList(
            DCGANDiscriminator(in_channels, image_size // s, base_channels, spectral_norm, minibatch_std, max_channels)
            for s in scales
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [d(F.avg_pool2d(x, s) if s > 1 else x) for s, d in zip(self.scales, self.discriminators)]
        return torch.cat(logits)
