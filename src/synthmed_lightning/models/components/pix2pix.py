"""pix2pix U-Net generator and PatchGAN discriminator (Isola et al. 2017), as used for Stage II.

Stage II of Guibas et al. (2017) paints a fundus photograph onto a vessel mask
with pix2pix. Layer naming follows the paper's appendix: Ck is
Conv-BatchNorm-(Leaky)ReLU with k filters, CDk adds 50 % dropout.
"""

from __future__ import annotations

import torch
from torch import nn

from .dcgan import init_dcgan_weights, maybe_spectral_norm, stage_channels

NORMS = ("batch", "instance")
# transpose: pix2pix's 4x4 stride-2 transposed conv (published); resize: nearest x2 then a 3x3 conv,
# which cannot draw the checkerboard a transposed conv leaves in flat background.
UPSAMPLES = ("transpose", "resize")


def _norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm (published pix2pix) or affine InstanceNorm (CycleGAN, pix2pixHD).

    Why instance: with the small batches of CPU training, BatchNorm's running statistics differ
    from the batch statistics the generator was trained under, and eval-mode painting came out
    darker than real fundus images (DRIVE, quick profile: red mean 126 against 197). Instance
    norm uses the same per-image statistics in training and painting, but its full-size paintings
    carried a bright square and rim, and U-Nets trained on them scored lower (README): batch is the
    default, and the export fixes the colour instead (data/appearance.py).
    """
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.BatchNorm2d(channels)


def _down(in_ch: int, out_ch: int, outermost: bool, innermost: bool, norm: str = "batch") -> nn.Sequential:
    """Encoder step: LeakyReLU(0.2) -> 4x4 stride-2 conv -> norm.

    The outermost step sees the raw input (no activation) and, like the
    innermost (1x1 bottleneck for 256 px, where normalising a single value per
    channel is degenerate), has no norm.
    """
    layers: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2)]
    use_norm = not (outermost or innermost)
    layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1, bias=not use_norm))
    if use_norm:
        layers.append(_norm(norm, out_ch))
    return nn.Sequential(*layers)


def _upsample_conv(in_ch: int, out_ch: int, bias: bool, upsample: str) -> list[nn.Module]:
    if upsample == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias)]
    return [nn.ConvTranspose2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1, bias=bias)]


def _up(in_ch: int, out_ch: int, outermost: bool, dropout: float, norm: str = "batch",
        upsample: str = "transpose") -> nn.Sequential:
    """Decoder step: ReLU -> x2 upsampling conv -> norm [-> Dropout]; tanh when outermost."""
    layers: list[nn.Module] = [nn.ReLU(), *_upsample_conv(in_ch, out_ch, outermost, upsample)]
    if outermost:
        layers.append(nn.Tanh())
        return nn.Sequential(*layers)
    layers.append(_norm(norm, out_ch))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class UNetGenerator(nn.Module):
    """Condition (B, in_channels, H, W) -> image (B, out_channels, H, W) in [-1, 1].

    Encoder of ``num_downs`` 4x4 stride-2 convs with base_channels * 2**i filters
    (capped at base_channels * 8): C64-C128-C256-C512-C512-C512-C512-C512 for the
    defaults. The decoder mirrors it with transposed convs; each decoder step
    takes the previous output concatenated with the encoder feature map of the
    same size (the U-Net skips let fine vessel detail bypass the bottleneck).
    As in the paper, the three innermost decoder steps use dropout (the only
    noise source of pix2pix; keep it active at test time for stochastic output).

    Fully convolutional: any H and W that are multiples of 2**num_downs work
    (256 for num_downs=8; 32 for num_downs=5). Other sizes raise ValueError.
    ``upsample="resize"`` replaces the transposed convs by nearest upsampling + 3x3 conv
    (no checkerboard); ``"transpose"`` is the published network.

    ``condition_skip``: the encoder's finest map is already at half resolution, so in the published
    network a 1-2 px vessel reaches the output only through a x2 upsampling of half-size features.
    With this flag the outermost decoder step ends in ``head_channels`` features instead, which are
    concatenated with the condition itself at full size and turned into the image by two 3x3 convs:
    every pixel of the mask is seen at its own position by the last layers.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 3,
        base_channels: int = 64,
        num_downs: int = 8,
        dropout: float = 0.5,
        norm: str = "batch",
        upsample: str = "transpose",
        condition_skip: bool = False,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if upsample not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {UPSAMPLES}, got {upsample!r}")
        if num_downs < 1:
            raise ValueError(f"num_downs must be >= 1, got {num_downs}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_downs = num_downs
        self.in_channels = in_channels
        self.out_channels = out_channels

        chans = [stage_channels(base_channels, i) for i in range(num_downs)]
        self.downs = nn.ModuleList(
            _down(
                in_channels if i == 0 else chans[i - 1],
                chans[i],
                outermost=i == 0,
                innermost=i == num_downs - 1,
                norm=norm,
            )
            for i in range(num_downs)
        )
        # ups[j] undoes downs[num_downs - 1 - j]; all but the innermost take a skip concat.
        # With condition_skip the outermost step is an ordinary one ending in head_channels features.
        head_channels = max(base_channels // 2, 8)
        ups = []
        for j in range(num_downs):
            level = num_downs - 1 - j
            in_ch = chans[level] * (1 if j == 0 else 2)
            outermost = level == 0 and not condition_skip
            out_ch = (head_channels if condition_skip else out_channels) if level == 0 else chans[level - 1]
            ups.append(_up(in_ch, out_ch, outermost, dropout if j < 3 else 0.0, norm, upsample))
        self.ups = nn.ModuleList(ups)
        self.head = None
        if condition_skip:
            self.head = nn.Sequential(
                nn.Conv2d(head_channels + in_channels, head_channels, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(head_channels, out_channels, 3, padding=1),
                nn.Tanh(),
            )
        self.apply(init_dcgan_weights)

    @property
    def size_multiple(self) -> int:
        """Height and width of the input must be multiples of this (2**num_downs)."""
        return 2**self.num_downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"UNetGenerator with num_downs={self.num_downs} needs height and width that are "
                f"multiples of {m}, got {h}x{w}"
            )
        condition = x
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        x = self.ups[0](skips.pop())
        for up in self.ups[1:]:
            x = up(torch.cat([x, skips.pop()], dim=1))
        if self.head is not None:
            x = self.head(torch.cat([x, condition], dim=1))
        return x


class PatchGANDiscriminator(nn.Module):
    """(condition, image) pair (B, in_channels, H, W) -> raw logit map (B, 1, h, w).

    The 70x70 PatchGAN for ``n_layers=3``: C64-C128-C256-C512 (the first three
    stride 2, the last stride 1) then a stride-1 conv to one channel, all 4x4.
    Each logit judges one 70x70 receptive field, so D models local texture and
    leaves global structure to the L1 term; a 256x256 input gives a 30x30 map.
    in_channels = condition channels + image channels (the caller concatenates).
    BatchNorm on all but the first layer, replaced by spectral norm when
    ``spectral_norm`` is set.
    """

    def __init__(
        self,
        in_channels: int = 5,
        base_channels: int = 64,
        n_layers: int = 3,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.in_channels = in_channels
        sn = spectral_norm

        layers: list[nn.Module] = [
            maybe_spectral_norm(nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1), sn),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        in_ch = base_channels
        for i in range(1, n_layers + 1):
            out_ch = stage_channels(base_channels, i)
            stride = 2 if i < n_layers else 1
            use_bn = not sn
            conv = nn.Conv2d(in_ch, out_ch, 4, stride=stride, padding=1, bias=not use_bn)
            layers.append(maybe_spectral_norm(conv, sn))
            if use_bn:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = out_ch
        layers.append(maybe_spectral_norm(nn.Conv2d(in_ch, 1, 4, stride=1, padding=1), sn))
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"PatchGANDiscriminator expects {self.in_channels} channels "
                f"(condition + image, concatenated), got {x.shape[1]}"
            )
        return self.net(x)
