"""An exponential moving average (EMA) of a generator's weights: the copy that samples.

A GAN generator's weights wander from step to step; their running average paints and samples more
steadily than the last step's weights (Karras et al. 2018 and most GANs since). Only the generator
is averaged: Lightning's weight-averaging callbacks average every network of the module, the
discriminator included.
"""

import torch
from torch import nn


@torch.no_grad()
def ema_update(average: nn.Module, live: nn.Module, step: int, decay: float) -> None:
    """One EMA step of `live`'s parameters into `average` (same architecture). The decay ramps up
    as min(decay, (1 + step) / (10 + step)), so a short run averages over its own length instead
    of keeping its random initialisation. Buffers (BatchNorm statistics) are copied, not averaged."""
    rate = 1.0 - min(decay, (1 + step) / (10 + step))
    for ema, weight in zip(average.parameters(), live.parameters()):
        ema.lerp_(weight.detach(), rate)
    for ema, buffer in zip(average.buffers(), live.buffers()):
        ema.copy_(buffer)
