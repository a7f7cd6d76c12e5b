"""What the noise-to-image GANs (Stage I `MaskGAN`, the single-GAN baseline `JointGAN`) share.

A DCGAN generator and discriminator (`models/components/dcgan.py`) trained by manual
optimisation: per batch one discriminator step, then one generator step. Lightning's
`global_step` counts both (2 per batch, PITFALLS.md), so budgets are given in generator
iterations and the stage configs set `trainer.max_steps` to `${gan_max_steps:<iterations>}`.

Choices for data sets of ~20 images (DRIVE), all hyperparameters:
- DiffAugment (Zhao et al. 2020) on real and fake before D in both steps (`diffaugment` policy);
  colour jitter touches only the first `color_channels` channels (RGB, not a mask channel).
- An EMA copy of the generator's weights only (`generator_ema`, PITFALLS.md: Lightning's
  EMAWeightAveraging would average D too); its BatchNorm statistics are copied from the
  generator. The decay ramps up, min(ema_decay, (1 + t) / (10 + t)), so short runs sample well.
  Every sample (validation grids, `generate`) comes from the EMA generator in eval mode.
- Non-saturating (default), hinge or least-squares loss; optional R1.
- Upsampling and normalisation come from measurements. On the phantom (64 px, batch 8, 2,400
  iterations) nearest-resize + conv upsampling with a BatchNorm D lost outright (samples a regular
  grid of dots), while strided transposed convs learned vessel trees: `upsample: transpose`. On DRIVE
  (quick profile) a spectrally normalised D stayed at chance (D loss ~1.3) and G settled on one
  periodic vessel texture at 64, 128 and 256 px (pairwise IoU 0.6-0.98 against the real masks' 0.12);
  a BatchNorm D (`spectral_norm: false`), 512-channel coarse layers (`max_channels`) and the MSGAN
  mode-seeking term (`mode_seeking: 1.0`) gave varied vessel fragments at 128 px (pairwise IoU 0.17).
- FOV: not generated. The FOV of every sample is the pixelwise majority of the training FOVs
  (`set_fov`, a buffer saved in the checkpoint). Fundus cameras give every image the same disc,
  so learning it would waste capacity and give ragged borders; fixing it makes the FOV exactly
  binary, identical for masks and images, and lets D ignore the outside (fake and real are both
  forced to -1 there). Data whose FOVs cover (almost) nothing get the whole square.
"""

import copy
from pathlib import Path

import lightning as L
import numpy as np
import torch

from synthmed_lightning.callbacks.loss_history import LossHistory
from synthmed_lightning.callbacks.sample_grids import publish_sample_grid
from synthmed_lightning.checkpoints import STAGE_KEY
from synthmed_lightning.metrics.mask_stats import mask_statistics
from synthmed_lightning.models.components.dcgan import DCGANGenerator, MultiScaleDiscriminator
from synthmed_lightning.models.components.diffaugment import diff_augment, parse_policy
from synthmed_lightning.models.components.gan_losses import discriminator_loss, generator_loss
from synthmed_lightning.models.dp import (DPPlan, attach_per_sample_gradients, make_private_network, private_optimizer,
                                          recording)
from synthmed_lightning.visualize import image_grid, save_png

# Samples generated per forward pass in `generate`: bounds memory at 512 px for any n.
_GENERATE_CHUNK = 16
# Grey level of the background outside the FOV in sample grids (vessels 255, background 0).
_OUTSIDE_FOV_GREY = 48


class GANModule(L.LightningModule):
    """Base class: subclasses define `CHANNELS`, `STAGE`, `color_channels`, `_real_batch`, `generate`,
    `_extra_statistics` and `_tiles`."""

    CHANNELS = 1
    STAGE = ""
    color_channels = 0

    def __init__(self, z_dim: int = 100, image_size: int = 64, base_channels: int = 64,
                 d_base_channels: int | None = None, upsample: str = "transpose", spectral_norm: bool = True,
                 loss: str = "nonsaturating", diffaugment: str = "color,translation,cutout",
                 ema_decay: float = 0.999, lr: float = 2e-4, d_lr: float | None = None,
                 betas: tuple[float, float] = (0.5, 0.999), r1_gamma: float = 0.0, grad_clip: float | None = None,
                 num_samples: int = 16, sample_seed: int = 1234, source_size: list[int] | None = None,
                 minibatch_std: bool = False, generator_spectral_norm: bool | None = None,
                 max_channels: int | None = None, d_scales: tuple[int, ...] = (1,), sample_threshold: float = 0.5,
                 mode_seeking: float = 0.0, privacy: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        # DP-SGD on the discriminator (privacy=dp, models/dp.py): a resolved DPPlan, set by the stage.
        self.dp_plan = DPPlan(**privacy) if privacy else None
        self._d_hooks = None  # Opacus' per-sample-gradient hooks on D, attached with the optimizers
        self._build(self.CHANNELS)

    # ------------------------------------------------------------------ building
    def _build(self, channels: int) -> None:
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
        self.generator = DCGANGenerator(z_dim=h.z_dim, out_channels=channels, image_size=h.image_size,
                                        base_channels=h.base_channels, upsample=h.upsample,
                                        spectral_norm=h.spectral_norm if h.generator_spectral_norm is None
                                        else h.generator_spectral_norm, max_channels=h.max_channels)
        try:
            self.discriminator = MultiScaleDiscriminator(
                in_channels=channels, image_size=h.image_size, base_channels=h.d_base_channels or h.base_channels,
                spectral_norm=h.spectral_norm, minibatch_std=h.minibatch_std, max_channels=h.max_channels,
                scales=tuple(h.d_scales))
        except ValueError as error:
            raise ValueError(f"model.d_scales={list(h.d_scales)}: {error}") from None
        if self.dp_plan is not None:
            for key, value in (("spectral_norm", h.spectral_norm), ("minibatch_std", h.minibatch_std),
                               ("r1_gamma", h.r1_gamma), ("grad_clip", h.grad_clip)):
                if value:  # each mixes samples or clips in a way DP-SGD's per-sample clipping cannot account
                    raise ValueError(f"model.{key}={value}: not possible with privacy=dp")
            self.discriminator = make_private_network(self.discriminator, "discriminator", self.dp_plan.norm)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()
        self.register_buffer("fov", torch.ones(1, 1, h.image_size, h.image_size))
        self.register_buffer("iterations_done", torch.zeros((), dtype=torch.long))

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
        policy = parse_policy(self.hparams.diffaugment)
        if "color" in policy and self.color_channels:
            c = self.color_channels
            x = torch.cat([diff_augment(x[:, :c], "color"), x[:, c:]], dim=1)
        rest = ",".join(p for p in policy if p != "color")
        return diff_augment(x, rest) if rest else x

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
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.update_ema()
        self.log_dict({"train/d_loss": d_loss.detach(), "train/g_loss": g_loss.detach()}, prog_bar=True)
        self.log("train/d_fake", fake_logits.detach().mean())
        if real_logits.numel():
            self.log("train/d_real", real_logits.detach().mean())

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

    @torch.no_grad()
    def update_ema(self) -> None:
        """One EMA step of the generator's weights; BatchNorm statistics are copied."""
        t = int(self.iterations_done)
        decay = min(self.hparams.ema_decay, (1 + t) / (10 + t))
        for ema, live in zip(self.generator_ema.parameters(), self.generator.parameters()):
            ema.lerp_(live.detach(), 1.0 - decay)
        for ema, live in zip(self.generator_ema.buffers(), self.generator.buffers()):
            ema.copy_(live)
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
        z = torch.randn(n, self.hparams.z_dim, generator=g).to(self.fov.device)
        was_training = self.generator_ema.training
        self.generator_ema.eval()
        out = torch.cat([self.generator_ema(chunk) for chunk in z.split(_GENERATE_CHUNK)])
        self.generator_ema.train(was_training)
        return self.apply_fov(out.float())

    def generate(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def binary_mask(self, mask_channel: torch.Tensor) -> torch.Tensor:
        """Generated mask channel in [-1, 1] -> {0, 1} inside the FOV: vessel where the coverage
        (x + 1) / 2 reaches `sample_threshold` (0.5, or the data's threshold with soft masks)."""
        return ((mask_channel + 1) / 2 >= self.hparams.sample_threshold).float() * self.fov

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


def mask_tile(mask: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """uint8 (S, S): vessels white, background black, outside the FOV dark grey."""
    tile = np.where(fov, 0, _OUTSIDE_FOV_GREY).astype(np.uint8)
    tile[(mask > 0.5) & fov] = 255
    return tile


def image_tile(image: np.ndarray) -> np.ndarray:
    """(3, S, S) in [-1, 1] -> uint8 (S, S, 3)."""
    return np.clip(np.round((image.transpose(1, 2, 0) + 1) * 127.5), 0, 255).astype(np.uint8)


class SampleGridWriter(L.Callback):
    """Writes each validation's fixed-noise sample grid to `<out_dir>/step_<iteration>.png` and
    `latest.png` (iteration = generator iterations), the real training items once to `real.png`,
    and logs the grid to the image loggers (W&B, TensorBoard). Rank 0 only."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.is_global_zero or not outputs or "grids" not in outputs:
            return
        iteration = outputs["iteration"]
        publish_sample_grid(trainer, self.out_dir, iteration, outputs["grids"]["samples"], f"iteration {iteration}")
        if not (self.out_dir / "real.png").is_file():
            save_png(self.out_dir / "real.png", outputs["grids"]["real"])


class GANLossHistory(LossHistory):
    """`LossHistory` for one of several losses: a distinct state key per monitored value, so
    two of them (G and D) can live in one Trainer and resume from a checkpoint."""

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor)
