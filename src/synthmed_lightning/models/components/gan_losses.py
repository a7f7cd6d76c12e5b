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
pix2pix halves D's loss; do that in the caller if wanted.
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
