"""Shapes, options and numerics of the plain-PyTorch GAN building blocks (tiny sizes, CPU)."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from synthmed_lightning.models.components.dcgan import (
    DCGANDiscriminator,
    DCGANGenerator,
    init_dcgan_weights,
)
from synthmed_lightning.models.components.diffaugment import diff_augment
from synthmed_lightning.models.components.gan_losses import discriminator_loss, generator_loss
from synthmed_lightning.models.components.pix2pix import PatchGANDiscriminator, UNetGenerator

torch.manual_seed(0)


def _convs(module):
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


# ---------------------------------------------------------------- DCGAN


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("upsample", ["resize", "transpose"])
def test_dcgan_generator_shape_and_range(size, upsample):
    g = DCGANGenerator(z_dim=8, out_channels=2, image_size=size, base_channels=4, upsample=upsample)
    out = g(g.sample_noise(2))
    assert out.shape == (2, 2, size, size)
    assert out.abs().max() <= 1.0


def test_dcgan_generator_512_and_4d_noise():
    g = DCGANGenerator(z_dim=4, image_size=512, base_channels=2).eval()
    with torch.no_grad():
        assert g(torch.randn(1, 4, 1, 1)).shape == (1, 1, 512, 512)


def test_dcgan_generator_channel_schedule():
    g = DCGANGenerator(z_dim=8, image_size=64, base_channels=4, upsample="transpose")
    outs = [m.out_channels for m in _convs(g)]
    assert outs == [32, 16, 8, 4, 1]  # 4x4 map has base*8, halves down to base, then the image
    g512 = DCGANGenerator(z_dim=8, image_size=512, base_channels=4)
    assert max(m.out_channels for m in _convs(g512)) == 32  # capped at base*8


@pytest.mark.parametrize("size", [16, 48, 100, 1024, 0, 64.0])
def test_dcgan_bad_image_size(size):
    with pytest.raises(ValueError, match="power of two"):
        DCGANGenerator(image_size=size)
    with pytest.raises(ValueError, match="power of two"):
        DCGANDiscriminator(image_size=size)


def test_dcgan_bad_options():
    with pytest.raises(ValueError, match="upsample"):
        DCGANGenerator(image_size=32, upsample="bilinear")
    with pytest.raises(ValueError, match="out_activation"):
        DCGANGenerator(image_size=32, out_activation="relu")


def test_dcgan_sample_noise_reproducible():
    g = DCGANGenerator(z_dim=8, image_size=32, base_channels=2)
    a = g.sample_noise(3, generator=torch.Generator().manual_seed(1))
    b = g.sample_noise(3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 8) and torch.equal(a, b)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("sn", [False, True])
def test_dcgan_discriminator_shape(size, sn):
    d = DCGANDiscriminator(in_channels=2, image_size=size, base_channels=4, spectral_norm=sn)
    assert d(torch.randn(3, 2, size, size)).shape == (3,)
    with pytest.raises(ValueError, match=str(size)):
        d(torch.randn(1, 2, size * 2, size * 2))


def test_dcgan_discriminator_batchnorm_layout():
    d = DCGANDiscriminator(image_size=64, base_channels=4)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == 3  # none on the first layer
    d_sn = DCGANDiscriminator(image_size=64, base_channels=4, spectral_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d_sn.modules())


def test_spectral_norm_parametrizations():
    for model in (
        DCGANGenerator(z_dim=8, image_size=32, base_channels=4, spectral_norm=True),
        DCGANDiscriminator(image_size=32, base_channels=4, spectral_norm=True),
        PatchGANDiscriminator(in_channels=2, base_channels=4, spectral_norm=True),
    ):
        assert all(parametrize.is_parametrized(c, "weight") for c in _convs(model))
    plain = DCGANDiscriminator(image_size=32, base_channels=4)
    assert not any(parametrize.is_parametrized(c, "weight") for c in _convs(plain))


def test_init_dcgan_weights_statistics():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(16, 64, 4), nn.BatchNorm2d(4096)
    init_dcgan_weights(conv)
    init_dcgan_weights(bn)
    assert abs(conv.weight.mean().item()) < 0.002 and abs(conv.weight.std().item() - 0.02) < 0.002
    assert abs(bn.weight.mean().item() - 1.0) < 0.002 and abs(bn.weight.std().item() - 0.02) < 0.002
    assert torch.all(bn.bias == 0)


# ---------------------------------------------------------------- pix2pix


def test_unet_shape_small():
    g = UNetGenerator(in_channels=2, out_channels=3, base_channels=4, num_downs=5)
    out = g(torch.randn(2, 2, 32, 64))  # any multiple of 2**5, not necessarily square
    assert out.shape == (2, 3, 32, 64)
    assert out.abs().max() <= 1.0


def test_unet_shape_256_default_depth():
    g = UNetGenerator(base_channels=2)  # num_downs=8 -> 1x1 bottleneck at 256
    assert g(torch.randn(1, 2, 256, 256)).shape == (1, 3, 256, 256)


def test_unet_encoder_channels():
    g = UNetGenerator(base_channels=4, num_downs=8)
    enc = [[m for m in block if isinstance(m, nn.Conv2d)][0].out_channels for block in g.downs]
    assert enc == [4, 8, 16, 32, 32, 32, 32, 32]
    bns = [any(isinstance(m, nn.BatchNorm2d) for m in block) for block in g.downs]
    assert bns == [False] + [True] * 6 + [False]  # none on the outermost and innermost


def test_unet_instance_norm_uses_each_image_statistics():
    g = UNetGenerator(base_channels=4, num_downs=5, norm="instance", dropout=0.0).eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in g.modules())
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in g.modules()) == 3 + 4  # inner downs + all but the outermost up
    x = torch.randn(2, 2, 32, 32)
    # Per-image statistics: an image's output does not depend on the rest of the batch, and
    # eval mode paints what train mode paints (BatchNorm's running statistics would differ).
    torch.testing.assert_close(g(x)[:1], g(x[:1]))
    torch.testing.assert_close(g(x), g.train()(x))
    with pytest.raises(ValueError, match="norm"):
        UNetGenerator(norm="group")


def test_unet_rejects_bad_size():
    g = UNetGenerator(base_channels=2, num_downs=5)
    with pytest.raises(ValueError, match="48x32"):
        g(torch.randn(1, 2, 48, 32))


@pytest.mark.parametrize("num_downs", [5, 8])
def test_unet_dropout_in_three_innermost_decoder_blocks(num_downs):
    g = UNetGenerator(base_channels=2, num_downs=num_downs)
    has_dropout = [any(isinstance(m, nn.Dropout) for m in block) for block in g.ups]
    assert has_dropout == [True] * 3 + [False] * (num_downs - 3)
    assert all(m.p == 0.5 for m in g.modules() if isinstance(m, nn.Dropout))
    g0 = UNetGenerator(base_channels=2, num_downs=num_downs, dropout=0.0)
    assert not any(isinstance(m, nn.Dropout) for m in g0.modules())


def test_patchgan_256_gives_30x30():
    d = PatchGANDiscriminator(in_channels=5, base_channels=4)
    assert d(torch.randn(1, 5, 256, 256)).shape == (1, 1, 30, 30)


def test_patchgan_channels_and_small_input():
    d = PatchGANDiscriminator(in_channels=2, base_channels=4, n_layers=3)
    assert [c.out_channels for c in _convs(d)] == [4, 8, 16, 32, 1]  # C64-C128-C256-C512 scaled
    assert d(torch.randn(2, 2, 64, 64)).shape == (2, 1, 6, 6)
    with pytest.raises(ValueError, match="channels"):
        d(torch.randn(1, 3, 64, 64))


def test_patchgan_receptive_field_is_70():
    """Gradient of one centre logit w.r.t. the input is non-zero on exactly a 70x70 window."""
    d = PatchGANDiscriminator(in_channels=1, base_channels=2, spectral_norm=True)
    for c in _convs(d):  # positive weights: no accidental zero gradients inside the field
        w = c.parametrizations.weight.original
        with torch.no_grad():
            w.copy_(w.abs() + 0.01)
    x = torch.zeros(1, 1, 128, 128, requires_grad=True)
    out = d(x)
    out[0, 0, out.shape[2] // 2, out.shape[3] // 2].backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero()
    cols = x.grad[0, 0].abs().sum(0).nonzero()
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


# ---------------------------------------------------------------- DiffAugment


def test_diff_augment_shape_and_gradients():
    x = torch.randn(3, 4, 32, 32, requires_grad=True)
    y = diff_augment(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diff_augment_keeps_equal_channels_equal(policy):
    """Same random parameters on every channel: a mask channel stays aligned with the image."""
    base = torch.rand(4, 1, 32, 32) * 2 - 1
    x = base.repeat(1, 2, 1, 1)
    y = diff_augment(x, policy, generator=torch.Generator().manual_seed(3))
    assert torch.equal(y[:, 0], y[:, 1])
    assert not torch.equal(y, x)


def test_diff_augment_translation_moves_content():
    x = torch.zeros(8, 1, 32, 32)
    x[:, :, 16, 16] = 1.0
    y = diff_augment(x, "translation", generator=torch.Generator().manual_seed(0))
    pos = [divmod(int(i), 32) for i in y.flatten(1).argmax(1)]
    assert all(abs(r - 16) <= 4 and abs(c - 16) <= 4 for r, c in pos)  # 1/8 of 32
    assert len(set(pos)) > 1  # per-sample shifts
    assert torch.allclose(y.sum((1, 2, 3)), torch.ones(8))  # a pure shift, nothing lost


def test_diff_augment_cutout_zeros_half_size_square():
    x = torch.ones(4, 2, 32, 32)
    y = diff_augment(x, "cutout", generator=torch.Generator().manual_seed(0))
    zeros = (y[:, 0] == 0).sum((1, 2))
    assert torch.all(zeros <= 16 * 16) and torch.all(zeros > 0)


def test_diff_augment_saturation_only_for_three_channels():
    """For a one-channel batch, 'color' is brightness + contrast only: an affine map per sample."""
    x = torch.rand(2, 1, 8, 8)
    y = diff_augment(x, "color", generator=torch.Generator().manual_seed(0))
    for i in range(2):
        a = torch.stack([x[i].flatten(), torch.ones(64)], 1)
        coef = torch.linalg.lstsq(a, y[i].flatten()[:, None]).solution
        assert torch.allclose(a @ coef, y[i].flatten()[:, None], atol=1e-5)


def test_diff_augment_reproducible_and_empty_policy():
    x = torch.randn(2, 3, 16, 16)
    a = diff_augment(x, generator=torch.Generator().manual_seed(5))
    b = diff_augment(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert diff_augment(x, "") is x


def test_diff_augment_unknown_policy():
    with pytest.raises(ValueError, match="'rotation'"):
        diff_augment(torch.zeros(1, 1, 8, 8), "color,rotation")


# ---------------------------------------------------------------- losses

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def _softplus(v):
    return math.log1p(math.exp(v))


def test_nonsaturating_losses():
    # BCE(real, 1) = softplus(-x); BCE(fake, 0) = softplus(x)
    d_expected = (_softplus(-2.0) + _softplus(1.0)) / 2 + (_softplus(0.5) + _softplus(-3.0)) / 2
    g_expected = (_softplus(-0.5) + _softplus(3.0)) / 2
    assert discriminator_loss(REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-6)
    assert discriminator_loss(REAL, FAKE, "nonsaturating").item() == pytest.approx(d_expected, rel=1e-6)
    assert generator_loss(FAKE).item() == pytest.approx(g_expected, rel=1e-6)


def test_hinge_losses():
    # relu(1 - [2, -1]) = [0, 2]; relu(1 + [0.5, -3]) = [1.5, 0]
    assert discriminator_loss(REAL, FAKE, "hinge").item() == pytest.approx(1.0 + 0.75)
    assert generator_loss(FAKE, "hinge").item() == pytest.approx(1.25)


def test_lsgan_losses():
    # (real - 1)^2 = [1, 4]; fake^2 = [0.25, 9]; (fake - 1)^2 = [0.25, 16]
    assert discriminator_loss(REAL, FAKE, "lsgan").item() == pytest.approx(2.5 + 4.625)
    assert generator_loss(FAKE, "lsgan").item() == pytest.approx(8.125)


def test_losses_work_on_patch_maps_and_backprop():
    real = torch.randn(2, 1, 3, 3, requires_grad=True)
    fake = torch.randn(2, 1, 3, 3, requires_grad=True)
    for kind in ("nonsaturating", "hinge", "lsgan"):
        loss = discriminator_loss(real, fake, kind) + generator_loss(fake, kind)
        assert loss.dim() == 0
        loss.backward()


def test_unknown_loss_kind():
    with pytest.raises(ValueError, match="wasserstein"):
        discriminator_loss(REAL, FAKE, "wasserstein")
    with pytest.raises(ValueError, match="wasserstein"):
        generator_loss(FAKE, "wasserstein")


def test_minibatch_std_lets_the_discriminator_see_batch_diversity():
    from synthmed_lightning.models.components.dcgan import DCGANDiscriminator, append_minibatch_std

    torch.manual_seed(0)
    same = torch.randn(1, 2, 4, 4).expand(3, -1, -1, -1)
    assert torch.all(append_minibatch_std(same)[:, -1] == 0)  # identical samples: no spread
    varied = append_minibatch_std(torch.randn(3, 2, 4, 4))
    assert varied.shape == (3, 3, 4, 4) and varied[0, -1, 0, 0] > 0
    d = DCGANDiscriminator(in_channels=1, image_size=32, base_channels=4, spectral_norm=True, minibatch_std=True)
    x = torch.randn(4, 1, 32, 32)
    logits_varied = d(x)
    logits_copies = d(x[:1].expand(4, -1, -1, -1))
    assert logits_varied.shape == (4,)
    # The same image scores differently depending on whether the rest of the batch is a copy of it.
    assert not torch.allclose(logits_varied[0], logits_copies[0])


def test_multiscale_discriminator_judges_each_scale():
    from synthmed_lightning.models.components.dcgan import MultiScaleDiscriminator

    d = MultiScaleDiscriminator(in_channels=1, image_size=128, base_channels=4, spectral_norm=True, scales=(1, 4))
    assert [sub.image_size for sub in d.discriminators] == [128, 32]
    assert d(torch.randn(3, 1, 128, 128)).shape == (6,)
    with pytest.raises(ValueError, match="distinct divisors"):
        MultiScaleDiscriminator(image_size=64, scales=(1, 1))


def test_max_channels_widens_the_coarse_layers_only():
    from synthmed_lightning.models.components.dcgan import stage_channels

    assert [stage_channels(16, s) for s in range(6)] == [16, 32, 64, 128, 128, 128]
    assert [stage_channels(16, s, max_channels=512) for s in range(6)] == [16, 32, 64, 128, 256, 512]
    g = DCGANGenerator(z_dim=8, image_size=64, base_channels=4, max_channels=64)
    assert g(torch.randn(2, 8)).shape == (2, 1, 64, 64)


def test_mode_seeking_penalty_grows_when_samples_ignore_the_noise():
    from synthmed_lightning.models.components.gan_losses import mode_seeking_penalty

    z = torch.randn(8, 16)
    same = torch.zeros(8, 1, 8, 8)
    varied = torch.randn(8, 1, 8, 8)
    assert mode_seeking_penalty(varied, z) < mode_seeking_penalty(same + 1e-3 * varied, z)
    assert torch.isfinite(mode_seeking_penalty(same, z))
    assert mode_seeking_penalty(varied[:1], z[:1]) == 0  # one sample: nothing to compare
