"""Full-image inference by overlapping sliding windows, so any image size fits in memory."""

import torch
import torch.nn.functional as F


@torch.no_grad()
def sliding_window_predict(net: torch.nn.Module, image: torch.Tensor, tile_size: int = 256,
                           overlap: float = 0.25, multiple: int = 16) -> torch.Tensor:
    """Logits for a (B, C, H, W) image, averaged over tiles with a weight that fades toward tile edges.

    Tiles overlap by `overlap` of their size; the image is reflect-padded to whole tiles and to a
    multiple of `multiple` (the network's total downsampling), and the padding is cropped away.
    """
    _, _, h, w = image.shape
    tile = _round_up(min(tile_size, max(h, w)), multiple)
    stride = max(1, int(tile * (1 - overlap)))
    ph, pw = _padded_length(h, tile, stride), _padded_length(w, tile, stride)
    padded = F.pad(image, (0, pw - w, 0, ph - h), mode="reflect" if min(h, w) > max(ph - h, pw - w) else "replicate")

    weight = _tile_weight(tile, image.device, image.dtype)
    out = None
    norm = torch.zeros((1, 1, ph, pw), device=image.device, dtype=image.dtype)
    for y in range(0, ph - tile + 1, stride):
        for x in range(0, pw - tile + 1, stride):
            logits = net(padded[:, :, y: y + tile, x: x + tile])
            if out is None:
                out = torch.zeros((image.shape[0], logits.shape[1], ph, pw), device=image.device, dtype=logits.dtype)
            out[:, :, y: y + tile, x: x + tile] += logits * weight
            norm[:, :, y: y + tile, x: x + tile] += weight
    return (out / norm)[:, :, :h, :w]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _padded_length(length: int, tile: int, stride: int) -> int:
    if length <= tile:
        return tile
    return tile + _round_up(length - tile, stride)


def _tile_weight(tile: int, device, dtype) -> torch.Tensor:
    """A separable tent that never reaches zero, so every pixel gets some weight."""
    ramp = 1.0 - (torch.arange(tile, device=device, dtype=dtype) - (tile - 1) / 2).abs() / tile
    return (ramp[:, None] * ramp[None, :])[None, None]
