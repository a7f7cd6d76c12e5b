"""What the noise-to-image GANs (Stage I `MaskGAN`, the single-GAN baseline `SingleGAN`) share.

A generator and a discriminator named by `_target_` dicts (`models/components/registry.py`; the
DCGAN pair of conf/model/_dcgan.yaml, where the network choices are explained), trained by manual
optimisation: per batch one D step, then one G step, so Lightning's `global_step` counts 2 per
generator iteration (docs/pitfalls.md) and budgets are given in iterations. D sees real and fake
through DiffAugment; every sample comes from an EMA copy of the generator in eval mode.

FOV: not generated. Every sample gets the pixelwise majority of the training FOVs (`set_fov`, a
buffer in the checkpoint): fundus cameras give every image the same disc, so learning it would
waste capacity and give ragged borders; fixed, it is exactly binary and D can ignore the outside
(fake and real are both -1 there).
"""

import copy

import lightning as L
import numpy as np
import torch

from synthmed_lightning.checkpoints import STAGE_KEY
from synthmed_lightning.metrics.mask_stats import mask_statistics
from synthmed_lightning.models.components.diffaugment import augment_channels, parse_policy
from synthmed_lightning.models.components.ema import ema_update
from synthmed_lightning.models.components.gan_losses import discriminator_loss, generator_loss, mode_seeking_penalty
from synthmed_lightning.models.components.registry import UnknownNetworkError, build_network
from synthmed_lightning.models.dp import (DPPlan, attach_per_sample_gradients, make_private_network, private_optimizer,
                                          recording)
from synthmed_lightning.visualize import image_grid, mask_tile

# Samples generated per forward pass in `generate`: bounds memory at 512 px for any n.
_GENERATE_CHUNK = 16


class GANModule(L.LightningModule):
    """Base class: subclasses define `CHANNELS`, `STAGE`, `color_channels`, `_real_batch`, `generate`,
    `_extra_statistics` and `_tiles`.

    `generator` and `discriminator` are `_target_` dicts (plain, so they are checkpoint
    hyperparameters); the generator needs `z_dim`, `image_size`, `out_channels` and `sample_noise`
    (`DCGANGenerator`). The EMA decay ramps up, min(ema_decay, (1 + t) / (10 + t)), so short runs
    sample well; only the generator is averaged (Lightning's EMAWeightAveraging would average D too).
    """

    CHANNELS = 1
    STAGE = ""
    color_channels = 0

    def __init__(self, generator: dict, discriminator: dict, loss: str = "nonsaturating",
                 diffaugment: str = "color,translation,cutout", ema_decay: float = 0.999, lr: float = 2e-4,
                 d_lr: float | None = None, betas: tuple[float, float] = (0.5, 0.999), r1_gamma: float = 0.0,
                 grad_clip: float | None = None, num_samples: int = 16, sample_seed: int = 1234,
                 source_size: list[int] | None = None, sample_threshold: float = 0.5, mode_seeking: float = 0.0,
                 privacy: dict | None = None, coverage_power: float = 1.0):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        # DP-SGD on the discriminator (privacy=dp, models/dp.py): a resolved DPPlan, set by the stage.
        self.dp_plan = DPPlan(**privacy) if privacy else None
        self._d_hooks = None  # Opacus' per-sample-gradient hooks on D, attached with the optimizers
        self._check_settings()
        self.generator = _build(generator, "generator")
        self.discriminator = _build(discriminator, "discriminator")
        self._check_networks()
        if self.dp_plan is not None:
            self.discriminator = make_private_network(self.discriminator, "discriminator", self.dp_plan.norm)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()
        size = self.generator.image_size
        self.register_buffer("fov", torch.ones(1, 1, size, size))
        self.register_buffer("iterations_done", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ building
    def _check_settings(self) -> None:
        h = self.hparams
        for key, check in (("diffaugment", parse_policy), ("loss", lambda kind: generator_loss(torch.zeros(1), kind))):
            try:
                check(h[key])
            except ValueError as error:
                raise ValueError(f"model.{key}={h[key]!r}: {error}") from None
        if not 0.0 <= h.ema_decay < 1.0:
            raise ValueError(f"model.ema_decay={h.ema_decay}: must be in [0, 1)")
        if h.num_samples < 2:
            raise ValueError(f"model.num_samples={h.num_samples}: needs at least 2 (pairwise statistics)")
        if not 0.0 < h.coverage_power <= 1.0:
            raise ValueError(f"model.coverage_power={h.coverage_power}: must be in (0, 1] (set by the stage from data.coverage_power)")

    def _check_networks(self) -> None:
        """The networks fit this module's channel layout and each other's image size, and D fits DP-SGD."""
        g, d, h = self.generator, self.discriminator, self.hparams
        for role, net, key, expected in (("generator", g, "out_channels", self.CHANNELS),
                                         ("discriminator", d, "in_channels", self.CHANNELS),
                                         ("discriminator", d, "image_size", g.image_size)):
            if getattr(net, key, expected) != expected:
                raise ValueError(f"model.{role}.{key}={getattr(net, key)}: {type(self).__name__} needs {expected}")
        if self.dp_plan is not None:
            # Each mixes samples or clips in a way DP-SGD's per-sample clipping cannot account for.
            refused = [(f"discriminator.{key}", h.discriminator.get(key)) for key in ("spectral_norm", "minibatch_std")]
            for key, value in (*refused, ("r1_gamma", h.r1_gamma), ("grad_clip", h.grad_clip)):
                if value:
                    raise ValueError(f"model.{key}={value}: not possible with privacy=dp")

    def set_fov(self, fov) -> None:
        """The fixed (S, S) {0, 1} FOV every sample gets (see the module docstring)."""
        fov = torch.as_tensor(np.asarray(fov), dtype=torch.float32)
        if fov.shape != self.fov.shape[-2:]:
            raise ValueError(f"FOV is {tuple(fov.shape)}, expected {tuple(self.fov.shape[-2:])}")
        self.fov.copy_((fov > 0.5).float()[None, None])

    def apply_fov(self, x: torch.Tensor) -> torch.Tensor:
        """Outside the FOV every channel is -1 (black image, background mask), for real and fake."""
        return torch.where(self.fov > 0.5, x, torch.full_like(x, -1.0))

    # ------------------------------------------------------------------ training
    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees of a real or fake batch: DiffAugment with the `diffaugment` policy."""
        return augment_channels(x, self.hparams.diffaugment, 0, self.color_channels)

    def _real_batch(self, batch: dict) -> torch.Tensor:
        """(B, C, S, S) in [-1, 1]: the real batch in the generator's channel layout."""
        raise NotImplementedError

    def training_step(self, batch: dict, batch_idx: int) -> None:
        h = self.hparams
        opt_g, opt_d = self.optimizers()
        real = self.apply_fov(self._real_batch(batch))
        # Under DP the real batch is a Poisson sample (any size, even 0); the fakes stay a fixed number.
        n_fake = self.dp_plan.expected_batch_size if self.dp_plan else real.shape[0]
        z = self.generator.sample_noise(n_fake, device=real.device)
        fake = self.apply_fov(self.generator(z))

        # Discriminator step: real up, fake (detached) down.
        self.toggle_optimizer(opt_d)
        with recording(self._d_hooks):
            real_in = self.augment(real)
            if h.r1_gamma > 0:
                real_in = real_in.detach().requires_grad_(True)
            real_logits, fake_logits = self._discriminate(real_in, self.augment(fake.detach()))
            d_loss = discriminator_loss(real_logits, fake_logits, h.loss)
            if h.r1_gamma > 0:  # R1 (Mescheder et al. 2018): penalise D's gradient on real data
                (grad,) = torch.autograd.grad(real_logits.sum(), real_in, create_graph=True)
                d_loss = d_loss + 0.5 * h.r1_gamma * grad.pow(2).flatten(1).sum(1).mean()
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
        self._clip(opt_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        # Generator step: make D call the (augmented) fakes real.
        self.toggle_optimizer(opt_g)
        g_loss = generator_loss(self.discriminator(self.augment(fake)), h.loss)
        if h.mode_seeking > 0:
            g_loss = g_loss + h.mode_seeking * mode_seeking_penalty(fake, z)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        self._clip(opt_g)
        self._generator_side_step(batch)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.update_ema()
        self.log_dict({"train/d_loss": d_loss.detach(), "train/g_loss": g_loss.detach()}, prog_bar=True)
        self.log("train/d_fake", fake_logits.detach().mean())
        if real_logits.numel():
            self.log("train/d_real", real_logits.detach().mean())

    def _generator_side_step(self, batch: dict) -> None:
        """Backward passes of networks that share the generator's optimizer step (Stage I's refiner),
        after G's gradients are clipped; none here."""

    def _discriminate(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits on real and fake. Under DP in one forward pass: Opacus keeps one batch of
        per-sample gradients per backward (and D has no BatchNorm then, so mixing is harmless)."""
        if self.dp_plan is None:
            return self.discriminator(real), self.discriminator(fake)
        logits = self.discriminator(torch.cat([real, fake])).view(-1, real.shape[0] + fake.shape[0])  # (scales, n)
        return logits[:, : real.shape[0]].reshape(-1), logits[:, real.shape[0]:].reshape(-1)

    def _clip(self, optimizer) -> None:
        if self.hparams.grad_clip:  # the Trainer's gradient_clip_val does not apply to manual optimisation
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")

    def update_ema(self) -> None:
        """One EMA step of the generator's weights (`components/ema.py`)."""
        ema_update(self.generator_ema, self.generator, int(self.iterations_done), self.hparams.ema_decay)
        self.iterations_done += 1

    def configure_optimizers(self):
        h = self.hparams
        betas = tuple(h.betas)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=h.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=h.d_lr or h.lr, betas=betas)
        if self.dp_plan is not None:
            if self._d_hooks is None:  # a plain attribute, not a submodule: checkpoints keep their keys
                object.__setattr__(self, "_d_hooks", attach_per_sample_gradients(self.discriminator))
            opt_d = private_optimizer(opt_d, self.dp_plan, samples_per_image=2)  # a real and a fake per image
        return [opt_g, opt_d]

    def privacy_spent(self) -> dict[str, float]:
        """`privacy/...` figures of the generator trained so far (empty without DP)."""
        return self.dp_plan.report(int(self.iterations_done)) if self.dp_plan else {}

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate_raw(self, n: int, seed: int) -> torch.Tensor:
        """(n, C, S, S) EMA-generator output in [-1, 1], FOV applied. The noise comes from a CPU generator
        seeded with `seed`, so a seed means the same noise on any device."""
        if n < 1:
            raise ValueError(f"generate needs n >= 1, got {n}")
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        z = torch.randn(n, self.generator.z_dim, generator=g).to(self.fov.device)
        was_training = self.generator_ema.training
        self.generator_ema.eval()
        out = torch.cat([self.generator_ema(chunk) for chunk in z.split(_GENERATE_CHUNK)])
        self.generator_ema.train(was_training)
        return self.apply_fov(out.float())

    def generate(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def binary_mask(self, mask_channel: torch.Tensor) -> torch.Tensor:
        """Generated mask channel in [-1, 1] -> {0, 1} inside the FOV: vessel where
        `coverage` reaches `sample_threshold` (0.5, or the data's threshold with soft masks)."""
        return (self.coverage(mask_channel) >= self.hparams.sample_threshold).float() * self.fov

    def coverage(self, mask_channel: torch.Tensor) -> torch.Tensor:
        """Generated mask channel in [-1, 1] -> vessel coverage in [0, 1]: (x + 1) / 2, with the data's
        `coverage_power` undone (the GAN learned coverage ** power)."""
        coverage = ((mask_channel + 1) / 2).clamp(0, 1)
        power = self.hparams.coverage_power
        return coverage if power == 1.0 else coverage ** (1.0 / power)

    # ------------------------------------------------------------------ validation
    def sample_statistics(self, reference: dict[str, torch.Tensor], prefix: str = "val/") -> dict[str, float]:
        """Statistics of `num_samples` fixed-noise samples against the real training items."""
        return self._evaluate(reference, prefix)[0]

    def _evaluate(self, reference: dict[str, torch.Tensor], prefix: str) -> tuple[dict[str, float], dict]:
        samples = self.generate(self.hparams.num_samples, self.hparams.sample_seed)
        fov = self.fov[0, 0].cpu().numpy() > 0.5
        real_masks = reference["mask"].cpu().numpy()[:, 0] > 0.5
        stats = mask_statistics(samples["mask"].cpu().numpy()[:, 0] > 0.5, real_masks & fov, fov=fov)
        stats.update(self._extra_statistics(samples, reference, fov))
        grids = {"samples": image_grid(self._tiles(samples, fov), columns=4),
                 "real": image_grid(self._tiles(self._reference_samples(reference), fov), columns=4)}
        return {f"{prefix}{k}": float(v) for k, v in stats.items()}, grids

    def _reference_samples(self, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        fov = self.fov.to(reference["mask"].device)
        out = {"mask": reference["mask"] * fov, "fov": fov.expand_as(reference["mask"])}
        if "image" in reference:
            out["image"] = torch.where(fov > 0.5, reference["image"], torch.full_like(reference["image"], -1.0))
        return out

    def _extra_statistics(self, samples: dict, reference: dict, fov: np.ndarray) -> dict[str, float]:
        return {}

    def _tiles(self, samples: dict[str, torch.Tensor], fov: np.ndarray) -> list[np.ndarray]:
        return [mask_tile(m, fov) for m in samples["mask"].cpu().numpy()[:, 0]]

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        reference = {k: v[0] for k, v in batch.items()}  # the reference set is one item
        stats, grids = self._evaluate(reference, "val/")
        self.log_dict(stats, sync_dist=False)  # identical on every rank: same fixed noise, same reals
        return {"grids": grids, "iteration": int(self.iterations_done)}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[STAGE_KEY] = self.STAGE


def _build(spec: dict, role: str) -> torch.nn.Module:
    """`build_network`, its errors named by their config path (model.generator: ...)."""
    try:
        return build_network(spec, role)
    except UnknownNetworkError:
        raise  # already names the setting; restore_module refuses such checkpoints by this type
    except (TypeError, ValueError) as error:
        raise ValueError(f"model.{role}: {error}") from None
