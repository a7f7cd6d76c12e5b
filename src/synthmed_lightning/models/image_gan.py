"""Stage II of Guibas et al. (2017): pix2pix (Isola et al. 2017) paints a fundus photograph onto a
vessel mask.

The generator is the pix2pix U-Net, conditioned on two channels in [-1, 1]: the vessel mask and
the field of view (FOV), so it knows where the retina ends. The discriminator is the 70x70
PatchGAN, judging (condition, image) pairs. Losses as published: non-saturating BCE on the
PatchGAN logits + lambda * L1 with lambda = 100, Adam(2e-4, beta1 = 0.5), D's loss halved.

Beyond the published losses (both off by default in the module, set in conf/model/image_gan.yaml):
* `vessel_weight` weighs L1 on and next to vessel pixels (1 + vessel_weight there): thin vessels
  are a sliver of the pixels, and plain L1 lets the painter leave them out.
* `vessel_critic`: a small segmenter trained alongside on the real patches (image -> mask); G is
  also penalised by its BCE on the paintings, so every painted vessel, thin ones included, must
  look like a vessel of the real photographs, and the background must not.
* `ema_decay` > 0 paints with an exponential moving average of G's weights (`components/ema.py`)
  instead of the last step's weights.
* `diffaugment`: DiffAugment (`components/diffaugment.py`) of every (condition, image) pair D sees,
  real and fake, in D's and G's step: ~18 training pairs let a plain D memorise them. Colour jitter
  touches the image only; translation and cutout move condition and image together.
* `paint_statistics`: what G's BatchNorm layers normalise with when painting: `running` (the
  averages of the training batches, PyTorch's eval mode) or `image` (each image's own statistics,
  one image per forward pass: what the pix2pix paper does at test time, with the test batch's).

The image is composited with the FOV (black outside it) both in training and when painting:
only the retina is learned, and the real images' off-FOV background (slightly grey after
photometric augmentation, or camera noise) cannot give fakes away to D.

Manual optimisation: one D step then one G step per batch, so `trainer.global_step` counts two
steps per batch; `generator_steps` is the number of batches seen (see stages/image.py).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from synthmed_lightning.checkpoints import STAGE_KEY
from synthmed_lightning.data.transforms import fov_depth as fov_depth_map  # the model has a fov_depth switch
from synthmed_lightning.models.components.diffaugment import augment_channels, parse_policy
from synthmed_lightning.models.components.ema import ema_update
from synthmed_lightning.models.components.gan_losses import LOSS_KINDS, discriminator_loss, generator_loss
from synthmed_lightning.models.components.registry import build_network
from synthmed_lightning.models.dp import (DPPlan, attach_per_sample_gradients, make_private_network,
                                          prepare_noise_only_step, private_optimizer, recording)
from synthmed_lightning.visualize import to_uint8


def condition(mask: torch.Tensor, fov: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
    """{0,1} mask and FOV (n, 1, H, W), and the FOV depth map in [0, 1] when the painter reads one,
    -> the generator's (n, 2 or 3, H, W) input in [-1, 1]."""
    return torch.cat([mask, fov] + ([depth] if depth is not None else []), dim=1) * 2.0 - 1.0


def depth_maps(fov: torch.Tensor) -> torch.Tensor:
    """`transforms.fov_depth` of each whole-image FOV (n, 1, H, W), on the FOV's device."""
    maps = [torch.from_numpy(fov_depth_map(f[0].cpu().numpy())) for f in fov]
    return torch.stack(maps)[:, None].to(fov.device, fov.dtype)


# What G's BatchNorm layers normalise with when painting (see the module docstring).
PAINT_STATISTICS = ("running", "image")


@contextmanager
def batch_statistics(network: torch.nn.Module):
    """Inside the block, `network`'s BatchNorm layers normalise each batch with its own statistics
    and leave their running averages as they were (train mode with momentum 0); other layers keep
    their mode (dropout stays off in eval mode)."""
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in norms]
    for m in norms:
        m.train()
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (training, momentum, tracked) in zip(norms, saved):
            m.train(training)
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def composite(image: torch.Tensor, fov: torch.Tensor) -> torch.Tensor:
    """Black (-1) outside the FOV, the image inside it."""
    return image * fov - (1.0 - fov)


class ImageGAN(L.LightningModule):
    """pix2pix on (mask, FOV) -> RGB fundus image.

    `generator` and `discriminator` are `_target_` dicts naming networks of
    `models/components/registry.py` (plain, so they are checkpoint hyperparameters).
    `paint` is the API the generate stage uses: any image size, deterministic.
    `train_fov_diameter` records the FOV scale (px) it learned at: vessels painted onto masks of
    another scale get the wrong width, so `stage=generate` warns about a mismatch.
    `appearance` is the training images' colour-statistics model (`data/appearance.py`,
    `AppearanceModel.to_dict`): the export samples each image's global appearance from it.
    `nuisance` is the training images' photographic nuisance statistics (`data/nuisance.py`,
    `NuisanceModel.to_dict`): texture, noise, fall-off and blur that `appearance=photo` adds.
    `vessel_profile` is the training images' vessel contrast ring by ring (`data/vessel_profile.py`,
    `VesselProfile.to_dict`): `stage=generate vessel_profile=true` gives it to the paintings.
    `fov_rim` and `optic_disc` are the training images' FOV edge and optic disc (`data/fov_rim.py`,
    `data/optic_disc.py`), which pix2pix does not paint: `generate fov_rim=true optic_disc=true`.
    With `fov_depth`, a third condition channel tells G and D how deep inside the FOV each pixel
    lies (`data/transforms.fov_depth`; training batches carry it as "fov_depth", `paint` computes it):
    the networks' input channels are set here from it (2 or 3 for G, plus the image's 3 for D).
    """

    def __init__(self, generator: dict, discriminator: dict, lr: float = 2e-4, beta1: float = 0.5,
                 beta2: float = 0.999, l1_weight: float = 100.0, loss: str = "nonsaturating",
                 d_loss_scale: float = 0.5, paint_batch_size: int = 4, train_fov_diameter: float | None = None,
                 appearance: dict | None = None, nuisance: dict | None = None, vessel_profile: dict | None = None,
                 fov_rim: dict | None = None, optic_disc: dict | None = None, privacy: dict | None = None,
                 vessel_weight: float = 0.0, vessel_critic: dict | None = None, critic_weight: float = 1.0,
                 fov_depth: bool = False, ema_decay: float = 0.0, diffaugment: str = "",
                 paint_statistics: str = "running"):
        super().__init__()
        if loss not in LOSS_KINDS:
            raise ValueError(f"unknown GAN loss {loss!r}: expected one of {', '.join(LOSS_KINDS)}")
        if vessel_weight < 0 or critic_weight < 0:
            raise ValueError(f"vessel_weight={vessel_weight} and critic_weight={critic_weight} must be >= 0")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"model.ema_decay={ema_decay}: must be in [0, 1) (0 = paint with the last weights)")
        parse_policy(diffaugment)  # an unknown policy fails here, before any training
        if paint_statistics not in PAINT_STATISTICS:
            raise ValueError(f"model.paint_statistics={paint_statistics!r}: expected one of {', '.join(PAINT_STATISTICS)}")
        if vessel_critic and privacy:
            raise ValueError("vessel_critic is trained on the real images outside DP-SGD: set model.vessel_critic=null "
                             "with privacy=dp")
        self.save_hyperparameters()
        self.automatic_optimization = False
        channels = 3 if fov_depth else 2
        self.generator = build_network({**generator, "in_channels": channels}, "generator")
        self.discriminator = build_network({**discriminator, "in_channels": channels + 3}, "discriminator")
        self.vessel_critic = build_network(vessel_critic, "vessel_critic") if vessel_critic else None
        # DP-SGD on both networks (privacy=dp, models/dp.py): G's L1 term reads the real image too.
        self.dp_plan = DPPlan(**privacy) if privacy else None
        self._hooks = None  # Opacus' per-sample-gradient hooks {"generator": ..., "discriminator": ...}
        if self.dp_plan is not None:
            self.generator = make_private_network(self.generator, "generator", self.dp_plan.norm)
            self.discriminator = make_private_network(self.discriminator, "discriminator", self.dp_plan.norm)
        # The averaged generator that paints (ema_decay > 0); None: the generator itself paints.
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False) if ema_decay else None
        # (mask, generated, real) uint8 triples of this validation epoch, for the sample grid.
        self.val_samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    @property
    def size_multiple(self) -> int:
        return self.generator.size_multiple

    @property
    def generator_steps(self) -> int:
        """Batches trained on (each one D and one G step; global_step counts both)."""
        return self.trainer.global_step // 2 if self._trainer is not None else 0

    @property
    def painter(self) -> torch.nn.Module:
        """The generator that paints for `forward` and `paint`: the EMA copy when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    def forward(self, mask: torch.Tensor, fov: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        """Painting of patches whose size is a multiple of `size_multiple`."""
        return composite(self.painter(condition(mask, fov, depth)), fov)

    def _pair(self, cond: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """D's input: the generator's condition and an image, DiffAugmented with the `diffaugment` policy."""
        return augment_channels(torch.cat([cond, image], dim=1), self.hparams.diffaugment,
                                cond.shape[1], cond.shape[1] + image.shape[1])

    def _depth(self, batch: dict) -> torch.Tensor | None:
        """The batch's FOV depth patches when the painter reads them."""
        if not self.hparams.fov_depth:
            return None
        if "fov_depth" not in batch:
            raise ValueError("model.fov_depth=true needs data.fov_depth=true (stage=image sets it from the model)")
        return batch["fov_depth"]

    def _l1(self, fake: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """L1, weighted 1 + vessel_weight on vessel pixels and their 1-px rim (the vessel's edge contrast)."""
        if not self.hparams.vessel_weight:
            return F.l1_loss(fake, real)
        near_vessel = F.max_pool2d(mask, 3, stride=1, padding=1)
        weight = 1.0 + self.hparams.vessel_weight * near_vessel
        return ((fake - real).abs() * weight).mean() / weight.mean()

    def _critic_loss(self, image: torch.Tensor, mask: torch.Tensor, fov: torch.Tensor) -> torch.Tensor:
        """The vessel critic's BCE on `image` against `mask`, inside the FOV."""
        logits = self.vessel_critic(image)
        loss = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
        return (loss * fov).sum() / fov.sum().clamp(min=1.0)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        mask, fov = batch["mask"], batch["fov"]
        if self.dp_plan is not None and mask.shape[0] == 0:  # an empty Poisson batch: noise-only steps
            for optimizer in (opt_d, opt_g):
                prepare_noise_only_step(optimizer.optimizer)
                optimizer.step()
            return
        cond = condition(mask, fov, self._depth(batch))  # once: G's input and half of each D pair
        with self._recording("generator"):  # G's per-sample gradients span its forward and the G step
            real = composite(batch["image"], fov)
            fake = composite(self.generator(cond), fov)

            # Discriminator: real pairs -> 1, fake pairs -> 0; halved as in pix2pix (D learns slower than G).
            self.toggle_optimizer(opt_d)
            with self._recording("discriminator"):
                d_loss = self.hparams.d_loss_scale * discriminator_loss(
                    *self._discriminate(self._pair(cond, real), self._pair(cond, fake.detach())),
                    self.hparams.loss)
                extra, d_total = {}, d_loss
                if self.vessel_critic is not None:  # the critic learns to find vessels in the real patches
                    extra["train/critic_real"] = critic_loss = self._critic_loss(real, mask, fov)
                    d_total = d_loss + critic_loss
                opt_d.zero_grad(set_to_none=True)
                self.manual_backward(d_total)
            opt_d.step()
            self.untoggle_optimizer(opt_d)

            # Generator: fool D, stay close to the real image (L1, lambda = 100).
            self.toggle_optimizer(opt_g)
            adversarial = generator_loss(self.discriminator(self._pair(cond, fake)), self.hparams.loss)
            l1 = self._l1(fake, real, mask)
            g_loss = adversarial + self.hparams.l1_weight * l1
            if self.vessel_critic is not None:  # ... and G to paint vessels the critic finds, and no others
                extra["train/critic_fake"] = critic_fake = self._critic_loss(fake, mask, fov)
                g_loss = g_loss + self.hparams.critic_weight * critic_fake
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        if self.generator_ema is not None:
            ema_update(self.generator_ema, self.generator, self.generator_steps - 1, self.hparams.ema_decay)

        self.log_dict({"train/l1": l1, "train/g_adv": adversarial, "train/g_loss": g_loss, "train/d_loss": d_loss,
                       **extra}, prog_bar=True, batch_size=mask.shape[0])

    def _discriminate(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits on real and fake pairs; under DP in one forward pass (one batch of per-sample gradients)."""
        if self.dp_plan is None:
            return self.discriminator(real), self.discriminator(fake)
        logits = self.discriminator(torch.cat([real, fake]))
        return logits[: real.shape[0]], logits[real.shape[0]:]

    def _recording(self, network: str):
        return recording(self._hooks[network] if self._hooks else None)

    def privacy_spent(self) -> dict[str, float]:
        """`privacy/...` figures of the generator trained so far (empty without DP)."""
        return self.dp_plan.report(self.generator_steps) if self.dp_plan else {}

    @torch.no_grad()
    def paint(self, mask: torch.Tensor, fov: torch.Tensor) -> torch.Tensor:
        """Fundus images (n, 3, H, W) in [-1, 1] for {0,1} masks and FOVs (n, 1, H, W) of any size.

        The generator is fully convolutional: the inputs are zero-padded (outside the FOV, no
        vessels) symmetrically to a multiple of 2**num_downs and the result cropped back. Eval mode
        (no dropout; BatchNorm with its running statistics, or with `paint_statistics=image` each
        image's own), so the same mask always gives the same image; the diversity of a synthetic set
        comes from Stage I's masks. Black outside the FOV. Returns a tensor on the inputs' device.
        """
        if mask.shape != fov.shape or mask.dim() != 4 or mask.shape[1] != 1:
            raise ValueError(f"paint expects mask and fov of one shape (n, 1, H, W), got {tuple(mask.shape)} and {tuple(fov.shape)}")
        was_training = self.training
        self.eval()
        try:
            h, w = mask.shape[-2:]
            m = self.size_multiple
            ph, pw = -(-h // m) * m - h, -(-w // m) * m - w
            pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
            own_statistics = self.hparams.paint_statistics == "image"
            step = 1 if own_statistics else self.hparams.paint_batch_size  # one image per batch: its own statistics
            outputs = []
            for start in range(0, mask.shape[0], step):
                chunk_mask = F.pad(mask[start: start + step].to(self.device, torch.float32), pad)
                chunk_fov = F.pad(fov[start: start + step].to(self.device, torch.float32), pad)
                depth = depth_maps(chunk_fov) if self.hparams.fov_depth else None
                with batch_statistics(self.painter) if own_statistics else nullcontext():
                    image = self(chunk_mask, chunk_fov, depth)[..., pad[2]: pad[2] + h, pad[0]: pad[0] + w]
                outputs.append(image.to(mask.device))
            return torch.cat(outputs)
        finally:
            self.train(was_training)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Paint each validation image's real mask at full resolution; L1 to the real image inside the FOV."""
        mask, fov, real = batch["mask"], batch["fov"], batch["image"]
        fake = self.paint(mask, fov)
        inside = fov.expand_as(real) > 0.5
        l1 = (fake - real).abs()[inside].mean() if inside.any() else (fake - real).abs().mean()
        self.log("val/l1", l1, prog_bar=True, batch_size=1, sync_dist=True)
        for i in range(mask.shape[0]):
            self.val_samples.append((to_uint8(mask[i] * 2 - 1), to_uint8(fake[i]), to_uint8(composite(real[i], fov[i]))))

    def on_validation_epoch_start(self) -> None:
        self.val_samples = []

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[STAGE_KEY] = "image"

    def configure_optimizers(self):
        betas = (self.hparams.beta1, self.hparams.beta2)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr, betas=betas)
        # The vessel critic trains with D's optimizer (one step per batch, as D): `global_step` keeps counting
        # two optimizer steps per generator iteration, which the budgets rely on.
        critic = list(self.vessel_critic.parameters()) if self.vessel_critic is not None else []
        opt_d = torch.optim.Adam([*self.discriminator.parameters(), *critic], lr=self.hparams.lr, betas=betas)
        if self.dp_plan is not None:
            if self._hooks is None:  # plain attribute, not submodules: checkpoints keep their keys
                object.__setattr__(self, "_hooks", {"generator": attach_per_sample_gradients(self.generator),
                                                    "discriminator": attach_per_sample_gradients(self.discriminator)})
            opt_g = private_optimizer(opt_g, self.dp_plan)
            opt_d = private_optimizer(opt_d, self.dp_plan, samples_per_image=2)  # a real and a fake pair per image
        return [opt_g, opt_d]
