"""Our sliding window and the segmenter's BCE + Dice loss next to MONAI's (docs/design.md, "Hand-written
code that stays, and why"). MONAI is not a dependency, so this is a check to run
by hand, not part of the test suite: `pip install monai==1.6.1 && pytest benchmarks/monai_equivalence.py`."""

import pytest
import torch
import torch.nn.functional as F

from synthmed_lightning.inference import _padded_length, _tile_weight, sliding_window_predict
from synthmed_lightning.models.components.unet import UNet
from synthmed_lightning.models.segmenter import soft_dice_loss

monai_inferers = pytest.importorskip("monai.inferers")
monai_losses = pytest.importorskip("monai.losses")


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return UNet(base_channels=4, depth=2).eval()


def test_monai_with_our_padding_and_tent_weights_is_our_sliding_window():
    """MONAI gives our output only when fed our reflect padding and weights: it would replace the loop alone."""
    net, tile, overlap = _net(), 32, 0.25
    x = torch.randn(1, 3, 70, 53)
    h, w = x.shape[-2:]
    stride = int(tile * (1 - overlap))
    ph, pw = _padded_length(h, tile, stride), _padded_length(w, tile, stride)
    padded = F.pad(x, (0, pw - w, 0, ph - h), mode="reflect")
    with torch.no_grad():
        theirs = monai_inferers.sliding_window_inference(padded, tile, 1, net, overlap,
                                                         roi_weight_map=_tile_weight(tile, "cpu", x.dtype)[0, 0])
    torch.testing.assert_close(theirs[..., :h, :w], sliding_window_predict(net, x, tile, overlap, multiple=4))


def test_monai_default_windows_differ_from_ours_near_the_far_borders():
    """MONAI shifts the last window inside the image where we reflect-pad past it: a different prediction."""
    net, tile, overlap = _net(), 32, 0.25
    x = torch.randn(1, 3, 70, 53)
    with torch.no_grad():
        theirs = monai_inferers.sliding_window_inference(x, tile, 1, net, overlap)
    ours = sliding_window_predict(net, x, tile, overlap, multiple=4)
    assert theirs.shape == ours.shape and not torch.allclose(theirs, ours, atol=1e-3)


def test_monai_dice_ce_with_batch_dice_and_unit_smoothing_is_our_loss():
    torch.manual_seed(0)
    logits = (torch.randn(4, 1, 24, 24) * 3).requires_grad_()
    target = (torch.rand(4, 1, 24, 24) < 0.12).float()
    ours = F.binary_cross_entropy_with_logits(logits, target) + 0.5 * soft_dice_loss(logits, target)
    loss = monai_losses.DiceCELoss(sigmoid=True, batch=True, smooth_nr=1.0, smooth_dr=1.0, lambda_dice=0.5)
    theirs = loss(logits, target)
    torch.testing.assert_close(theirs, ours)
    (grad_ours,) = torch.autograd.grad(ours, logits)
    (grad_theirs,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(grad_theirs, grad_ours)
    # MONAI's default Dice is per image, not over the batch as ours: a different loss.
    assert not torch.allclose(monai_losses.DiceCELoss(sigmoid=True)(logits, target), theirs)
