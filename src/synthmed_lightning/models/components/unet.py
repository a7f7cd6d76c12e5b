"""U-Net (Ronneberger et al. 2015) for vessel segmentation, with configurable depth and width."""

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int, dropout: float = 0.0) -> nn.Sequential:
    """Two 3x3 conv + BatchNorm + ReLU: the unit every U-Net level is made of."""
    layers = [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Encoder-decoder with skip connections; returns logits of shape (B, out_channels, H, W).

    `depth` levels below the input halve the resolution each time, so H and W must be multiples
    of 2**depth (sliding-window inference pads to that). Width doubles per level from `base_channels`.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base_channels: int = 32,
                 depth: int = 4, dropout: float = 0.0):
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.encoders = nn.ModuleList([conv_block(in_channels, widths[0])])
        self.encoders.extend(conv_block(widths[i], widths[i + 1], dropout if i == depth - 1 else 0.0) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.upsamplers = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth)))
        self.decoders = nn.ModuleList(conv_block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    @property
    def size_multiple(self) -> int:
        return 2**self.depth

    def encode(self, x: torch.Tensor, levels: int | None = None) -> list[torch.Tensor]:
        """The encoder's feature maps, finest first; the last is the bottleneck. `levels` stops after
        that many (feature extractors that need only the fine levels skip the rest)."""
        features = []
        for i, encoder in enumerate(self.encoders[:levels]):
            x = encoder(x if i == 0 else self.pool(x))
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = self.encode(x)
        x = skips.pop()
        for upsample, decoder in zip(self.upsamplers, self.decoders):
            x = decoder(torch.cat([upsample(x), skips.pop()], dim=1))
        return self.head(x)
