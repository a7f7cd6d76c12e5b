"""Differentially private GAN training (`privacy=dp`): DP-SGD with Opacus.

DP-SGD (Abadi et al. 2016) bounds what one training image can change: every optimizer step uses a
Poisson sample of the training images (each drawn with probability `sample_rate`), clips each
image's gradient to `max_grad_norm` and adds Gaussian noise of `noise_multiplier` times that norm
to their sum. Opacus computes the per-sample gradients (hooks on the network's layers), clips, adds
the noise (`DPOptimizer`) and accounts the privacy spent (`RDPAccountant`): after the run the
generator is (epsilon, delta)-DP with respect to the training images.

What has to be private is whatever reads the training images:
- noise -> image GANs (Stage I, the single GAN): only the discriminator. The generator learns
  from D's outputs alone, so it inherits D's guarantee (post-processing), as in DP-GAN.
- pix2pix (Stage II): the discriminator and the generator, whose L1 term compares its painting
  with the real image. Each iteration releases two noisy sums of one Poisson sample: D's, where an
  image contributes two clipped gradients (its real pair and its fake pair, 2C), and G's (C). That
  is one Gaussian mechanism of sensitivity sqrt(5) C, accounted as one step with noise multiplier
  `noise_multiplier / sqrt(5)` (`sensitivity` below).

Per-sample gradients rule out layers that mix the samples of a batch: BatchNorm becomes
GroupNorm (Opacus' `ModuleValidator.fix`), and spectral norm, minibatch-stddev and R1 are refused.
Not covered by the guarantee, and said so in the README: the FOV disc (the pixelwise majority of
the training FOVs, a property of the camera) and Stage II's colour statistics (`data/appearance.py`,
12 numbers). Under DDP each rank would sample on its own: `privacy=dp` runs on one device.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from synthmed_lightning.errors import ConfigError

PRIVACY_MODES = ("none", "dp")
NORMS = ("group", "instance")


@dataclass(frozen=True)
class DPPlan:
    """A resolved DP-SGD setting: what the training modules and the accountant need."""

    noise_multiplier: float  # sigma: noise std / max_grad_norm, in each noisy sum
    max_grad_norm: float  # C: the clip of each sample's gradient
    sample_rate: float  # q: each training image's chance to be in a batch
    expected_batch_size: int  # q x number of training images, the configured batch size: Opacus' mean divides by it
    delta: float
    sensitivity: float = 1.0  # per image per step, in units of C (sqrt(5) for pix2pix, see above)
    norm: str = "group"  # what replaces BatchNorm: group | instance

    def to_dict(self) -> dict:
        return asdict(self)

    def epsilon(self, steps: int) -> float:
        """The epsilon spent after `steps` iterations (at `delta`)."""
        return epsilon_spent(self.noise_multiplier / self.sensitivity, self.sample_rate, steps, self.delta)

    def report(self, steps: int) -> dict[str, float]:
        """What metrics.json records of a DP run after `steps` iterations."""
        return {"privacy/epsilon": self.epsilon(steps), "privacy/delta": self.delta,
                "privacy/noise_multiplier": self.noise_multiplier, "privacy/max_grad_norm": self.max_grad_norm,
                "privacy/sample_rate": self.sample_rate, "privacy/steps": steps}


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """(epsilon at delta) of `steps` Poisson-subsampled Gaussian steps, by Opacus' RDP accountant."""
    from opacus.accountants import RDPAccountant

    if steps <= 0:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, int(steps))]
    return float(accountant.get_epsilon(delta=delta))


def plan_dp(privacy: dict, records: int, batch_size: int, steps: int, sensitivity: float = 1.0) -> DPPlan | None:
    """The `privacy` config group (mode, noise_multiplier or target_epsilon, delta, max_grad_norm, norm) for
    a run of `steps` iterations drawing on average `batch_size` of `records` training images."""
    mode = privacy.get("mode", "none")
    if mode not in PRIVACY_MODES:
        raise ConfigError(f"privacy.mode={mode!r}: must be one of {', '.join(PRIVACY_MODES)}")
    if mode == "none":
        return None
    _require_opacus()
    if batch_size >= records:
        raise ConfigError(f"privacy=dp: the batch size ({batch_size}) must be below the number of training images "
                          f"({records}); each image joins a batch with probability batch/images")
    delta, clip = float(privacy["delta"]), float(privacy["max_grad_norm"])
    if not 0.0 < delta < 1.0 / records:
        raise ConfigError(f"privacy.delta={delta}: must be in (0, 1/{records}) for {records} training images")
    if clip <= 0:
        raise ConfigError(f"privacy.max_grad_norm={clip}: must be positive")
    norm = privacy["norm"]
    if norm not in NORMS:
        raise ConfigError(f"privacy.norm={norm!r}: must be one of {', '.join(NORMS)}")
    sample_rate = batch_size / records
    sigma = privacy.get("noise_multiplier")
    if sigma is None:
        target = privacy.get("target_epsilon")
        if target is None or float(target) <= 0:
            raise ConfigError("privacy=dp needs privacy.noise_multiplier or a positive privacy.target_epsilon")
        from opacus.accountants.utils import get_noise_multiplier

        # The accountant sees sigma / sensitivity: solve for that, then scale back.
        sigma = sensitivity * get_noise_multiplier(target_epsilon=float(target), target_delta=delta,
                                                   sample_rate=sample_rate, steps=steps, accountant="rdp")
    elif float(sigma) <= 0:
        raise ConfigError(f"privacy.noise_multiplier={sigma}: must be positive")
    return DPPlan(noise_multiplier=float(sigma), max_grad_norm=clip, sample_rate=sample_rate,
                  expected_batch_size=batch_size, delta=delta, sensitivity=float(sensitivity), norm=norm)


def _require_opacus() -> None:
    try:
        import opacus  # noqa: F401
    except ImportError:
        raise ConfigError("privacy=dp needs Opacus: pip install 'synthmed-lightning[dp]'") from None


def make_private_network(network: nn.Module, name: str, norm: str = "group") -> nn.Module:
    """`network` with BatchNorm swapped for GroupNorm (`norm="instance"`: InstanceNorm) and in-place
    activations made out-of-place (they would overwrite what Opacus' hooks keep), checked for
    layers Opacus cannot take per sample."""
    _require_opacus()
    from opacus.validators import ModuleValidator

    logging.getLogger("opacus").setLevel(logging.WARNING)  # not one INFO line per replaced layer
    network = ModuleValidator.fix(network, replace_bn_with_in=norm == "instance")
    for layer in network.modules():
        if getattr(layer, "inplace", False):
            layer.inplace = False
    errors = ModuleValidator.validate(network, strict=False)
    if errors:
        raise ConfigError(f"privacy=dp: the {name} has a layer DP-SGD cannot train: {str(errors[0]).splitlines()[0]}")
    return network


def attach_per_sample_gradients(network: nn.Module):
    """Opacus' hooks on `network`'s layers, switched off until `recording`: with them on, a backward
    leaves `p.grad_sample` (one gradient per sample) beside `p.grad`. The network itself is called as
    before, so its state_dict keys (and checkpoints) do not change; the returned wrapper holds the hooks."""
    from opacus import GradSampleModule

    wrapper = GradSampleModule(network, loss_reduction="mean")
    wrapper.disable_hooks()
    return wrapper


@contextmanager
def recording(wrapper):
    """Per-sample gradients for the forward and backward passes inside the block only: the
    generator's step backpropagates through D, which must not leave D per-sample gradients.
    `wrapper` None (training without DP): nothing to record."""
    if wrapper is None:
        yield
        return
    wrapper.enable_hooks()
    try:
        yield
    finally:
        wrapper.disable_hooks()


def private_optimizer(optimizer: torch.optim.Optimizer, plan: DPPlan, samples_per_image: int = 1):
    """`optimizer` behind Opacus' DPOptimizer: clip each sample's gradient, add noise, then step.
    `samples_per_image`: rows per sampled image in the network's batch (e.g. 2: real and fake),
    so the noisy sum is divided by the expected batch the network sees."""
    from opacus.optimizers import DPOptimizer

    return DPOptimizer(optimizer, noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.max_grad_norm,
                       expected_batch_size=plan.expected_batch_size * samples_per_image, loss_reduction="mean")


def prepare_noise_only_step(optimizer) -> None:
    """An empty Poisson batch (no image drawn) still takes its step: zero gradients plus noise. Not
    stepping would tell which batches were empty. Call `optimizer.step()` after this."""
    optimizer.zero_grad(set_to_none=True)
    for p in optimizer.params:
        p.grad_sample = p.new_zeros((0, *p.shape))


def pix2pix_sensitivity() -> float:
    """Stage II: D sees each image twice (real pair, fake pair: 2C), G once (C): sqrt(2^2 + 1^2)."""
    return math.sqrt(5.0)
