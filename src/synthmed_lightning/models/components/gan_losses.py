"""Adversarial losses on raw discriminator logits.

Three common choices:

* ``"nonsaturating"`` (default): the original GAN with BCE on logits; G
  maximises log D(G(z)) instead of minimising log(1 - D(G(z))) so its gradient
  does not vanish early (Goodfellow et al. 2014). Used by DCGAN and pix2pix.
* ``"hinge"``: D minimises relu(1 - real) + relu(1 + fake), G minimises -fake
  (Lim & Ye 2017; SN-GAN, BigGAN). Pairs well with spectral norm.
* ``"lsgan"``: least squares to targets 1 (real) and 0 (fake) (Mao et al. 2017).

The discriminator loss is the *sum* of its real and fake terms (each a mean
over all logits, so it works for per-image logits and PatchGAN maps alike).
pix2pix halves D's loss; do that in the caller if wanted. `mode_seeking_penalty` is an extra
generator term against mode collapse (MSGAN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_KINDS = ("nonsaturating", "hinge", "lsgan")


def _check_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown GAN loss kind {kind!r}; expected one of {LOSS_KINDS}")


def discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "nonsaturating"
) -> torch.Tensor:
    """Scalar loss pushing D's logits up on real and down on fake samples. An empty side adds
    nothing (a DP-SGD Poisson batch may draw no real image)."""
    _check_kind(kind)
    if kind == "nonsaturating":
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits), reduction="none")
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits), reduction="none")
    elif kind == "hinge":
        real, fake = F.relu(1.0 - real_logits), F.relu(1.0 + fake_logits)
    else:  # lsgan
        real, fake = (real_logits - 1.0).pow(2), fake_logits.pow(2)
    return _mean_or_zero(real) + _mean_or_zero(fake)


def _mean_or_zero(values: torch.Tensor) -> torch.Tensor:
    return values.mean() if values.numel() else values.sum()


def generator_loss(fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """Scalar loss for G: make D call its samples real."""
    _check_kind(kind)
    if kind == "nonsaturating":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "hinge":
        return -fake_logits.mean()
    return (fake_logits - 1.0).pow(2).mean()


def mode_seeking_penalty(fake: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's term (Mao et al. 2019): 1 / (|G(z1) - G(z2)| / |z1 - z2|) over the two halves of a batch.

    Small when different noise gives different samples; it grows as the generator starts to ignore
    z, which is how Stage I collapsed on DRIVE (every sample the same vessel texture).
    """
    half = fake.shape[0] // 2
    if half == 0:
        return fake.new_zeros(())
    image_distance = (fake[:half] - fake[half: 2 * half]).abs().mean()
    noise_distance = (z[:half] - z[half: 2 * half]).abs().mean()
    return 1.0 / (image_distance / noise_distance + eps)
