"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

With ~20 training masks a discriminator memorises the data within a few
thousand steps. DiffAugment applies the same random, differentiable
augmentation to real and fake images before D (in both the D and the G step),
so D cannot overfit while G still gets gradients through the augmentation.

Ported from the authors' ``DiffAugment_pytorch.py`` for tensors (B, C, H, W) in
[-1, 1], with two changes: randomness can come from a ``torch.Generator``, and
saturation is skipped for fewer than 3 channels (it is meaningless for a
single mask channel). Every random parameter is drawn per sample and shared by
all channels of that sample, so a mask channel stays aligned with its image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(x: torch.Tensor, generator: torch.Generator | None, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) numbers on x's device, drawn on the generator's device if one is given."""
    if generator is None:
        return torch.rand(*shape, dtype=x.dtype, device=x.device)
    return torch.rand(*shape, generator=generator, device=generator.device).to(x.device, x.dtype)


def _randint(x: torch.Tensor, generator: torch.Generator | None, low: int, high: int, *shape: int) -> torch.Tensor:
    """Integers in [low, high) on x's device; see ``_rand``."""
    if generator is None:
        return torch.randint(low, high, shape, device=x.device)
    return torch.randint(low, high, shape, generator=generator, device=generator.device).to(x.device)


def rand_brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add one offset in [-0.5, 0.5) per sample."""
    return x + (_rand(x, generator, x.size(0), 1, 1, 1) - 0.5)


def rand_saturation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each pixel's deviation from its channel mean by a factor in [0, 2); needs C >= 3."""
    if x.size(1) < 3:
        return x
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, generator, x.size(0), 1, 1, 1) * 2) + mean


def rand_contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale the deviation from the sample mean by a factor in [0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, generator, x.size(0), 1, 1, 1) + 0.5) + mean


def rand_translation(
    x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = 0.125
) -> torch.Tensor:
    """Shift each sample by up to ``ratio`` of its size in x and y, filling with zeros.

    Implemented as a gather from a 1-pixel zero-padded copy (indices clamped
    into the padding), so gradients flow to every pixel that stays in view.
    """
    b, _, h, w = x.shape
    shift_h, shift_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = _randint(x, generator, -shift_h, shift_h + 1, b, 1, 1)
    dx = _randint(x, generator, -shift_w, shift_w + 1, b, 1, 1)
    grid_b, grid_y, grid_x = torch.meshgrid(
        torch.arange(b, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    grid_y = torch.clamp(grid_y + dy + 1, 0, h + 1)
    grid_x = torch.clamp(grid_x + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    shifted = padded.permute(0, 2, 3, 1)[grid_b, grid_y, grid_x]  # (B, H, W, C)
    return shifted.permute(0, 3, 1, 2).contiguous()


def rand_cutout(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` of the size per sample, at a random centre (may be clipped)."""
    b, _, h, w = x.shape
    cut_h, cut_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    off_y = _randint(x, generator, 0, h + (1 - cut_h % 2), b, 1, 1)
    off_x = _randint(x, generator, 0, w + (1 - cut_w % 2), b, 1, 1)
    grid_b, grid_y, grid_x = torch.meshgrid(
        torch.arange(b, device=x.device),
        torch.arange(cut_h, device=x.device),
        torch.arange(cut_w, device=x.device),
        indexing="ij",
    )
    grid_y = torch.clamp(grid_y + off_y - cut_h // 2, 0, h - 1)
    grid_x = torch.clamp(grid_x + off_x - cut_w // 2, 0, w - 1)
    keep = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    keep[grid_b, grid_y, grid_x] = 0
    return x * keep.unsqueeze(1)


AUGMENT_FNS = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def parse_policy(policy: str | None) -> list[str]:
    """Split "color,translation" into names, rejecting unknown ones before any work is done."""
    if not policy:
        return []
    names = [p.strip() for p in policy.split(",") if p.strip()]
    for name in names:
        if name not in AUGMENT_FNS:
            raise ValueError(f"unknown DiffAugment policy {name!r}; expected some of {sorted(AUGMENT_FNS)}")
    return names


def diff_augment(
    x: torch.Tensor,
    policy: str | None = "color,translation,cutout",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Augment a batch (B, C, H, W) in [-1, 1] with the comma-separated ``policy``.

    Apply it to both real and fake batches right before the discriminator.
    An empty policy returns x unchanged. Note translation and cutout fill
    with 0, i.e. mid-grey in [-1, 1] (as in the reference implementation).
    """
    if x.dim() != 4:
        raise ValueError(f"diff_augment expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    for name in parse_policy(policy):
        for fn in AUGMENT_FNS[name]:
            x = fn(x, generator)
    return x


def augment_channels(x: torch.Tensor, policy: str | None, start: int, stop: int) -> torch.Tensor:
    """DiffAugment of a batch whose channels are not all colour: the colour jitter touches only
    channels start..stop-1 (e.g. a painter's RGB, not its condition channels); the geometric ops
    (translation, cutout) move every channel together, so mask and image stay aligned."""
    names = parse_policy(policy)
    if "color" in names and stop > start:
        x = torch.cat([x[:, :start], diff_augment(x[:, start:stop], "color"), x[:, stop:]], dim=1)
    rest = ",".join(name for name in names if name != "color")
    return diff_augment(x, rest) if rest else x
