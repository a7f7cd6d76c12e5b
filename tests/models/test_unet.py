"""U-Net shapes, and sliding-window inference against one whole-image pass."""

import pytest
import torch
from torch import nn

from synthmed_lightning.inference import sliding_window_predict
from synthmed_lightning.models.components.unet import UNet


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_unet_keeps_the_spatial_size(depth):
    net = UNet(in_channels=3, out_channels=1, base_channels=4, depth=depth)
    x = torch.randn(2, 3, 2**depth * 3, 2**depth * 5)
    assert net(x).shape == (2, 1, 2**depth * 3, 2**depth * 5)
    assert net.size_multiple == 2**depth


def test_unet_width_grows_with_base_channels():
    small = sum(p.numel() for p in UNet(base_channels=4, depth=2).parameters())
    large = sum(p.numel() for p in UNet(base_channels=8, depth=2).parameters())
    assert 3.5 < large / small < 4.5  # conv weights scale with width squared


def test_sliding_window_equals_a_whole_image_pass_for_a_pointwise_net():
    net = nn.Conv2d(3, 1, 1)  # no spatial context: tiling must not change anything
    x = torch.randn(1, 3, 70, 53)
    tiled = sliding_window_predict(net, x, tile_size=32, overlap=0.5, multiple=16)
    assert tiled.shape == (1, 1, 70, 53)
    torch.testing.assert_close(tiled, net(x), atol=1e-5, rtol=1e-5)


def test_sliding_window_handles_images_smaller_than_a_tile():
    net = UNet(base_channels=4, depth=2).eval()
    out = sliding_window_predict(net, torch.randn(1, 3, 20, 30), tile_size=64, multiple=4)
    assert out.shape == (1, 1, 20, 30)
