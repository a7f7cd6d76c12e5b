"""The three training stages as benchmark subjects: their quick-profile network, batch and resolution,
real batches from their own DataModule, a Lightning run of their training step, and the same step
written as a plain PyTorch loop (the reference the Lightning rate is compared with).

Sizes (conf/profile/quick.yaml, written out here so the figures can be read without the configs):
  segment  U-Net base 16, depth 4 (1.9 M parameters); batch 16 of 96x96 RGB patches; AdamW + one-cycle LR
  mask     DCGAN G and D base 16, z 100, spectral norm, DiffAugment, EMA; batch 8 of 256x256 masks
  image    pix2pix U-Net G base 32 (6 downs) + 70x70 PatchGAN D base 32; batch 2 of 256x256 crops, BCE + 100 L1
"""

from dataclasses import dataclass
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from _common import Clock, compose, data_overrides
from synthmed_lightning.models.components.ema import ema_update
from synthmed_lightning.models.components.gan_losses import discriminator_loss, generator_loss
from synthmed_lightning.models.image_gan import composite, condition
from synthmed_lightning.models.segmenter import soft_dice_loss
from synthmed_lightning.stages.common import build_datamodule, build_trainer, instantiate_primitive

STAGES = ("segment", "mask", "image")
# What the plain loops and the Lightning runs repeat: a fixed set of real batches, cycled.
_DISTINCT_BATCHES = 4


class Cycle(Dataset):
    """`length` items cycling through pre-made batches (a DataLoader with batch_size=None serves them)."""

    def __init__(self, batches: list, length: int):
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.batches[index % len(self.batches)]


@dataclass
class Subject:
    stage: str
    cfg: object
    datamodule: object
    new_model: Callable[[], L.LightningModule]
    batch_size: int
    optimizer_steps: int  # per batch: 2 for the GANs (D and G)

    def batches(self, n: int = _DISTINCT_BATCHES) -> list:
        loader = self.datamodule.train_dataloader()
        out = []
        for batch in loader:
            out.append(batch)
            if len(out) == n:
                return out
        return out


def subject(stage: str, *overrides: str, profile: str = "quick") -> Subject:
    cfg = compose(f"stage={stage}", f"profile={profile}", *data_overrides(), "logger=csv", *overrides)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    if stage == "segment":
        def new_model():
            torch.manual_seed(0)
            return instantiate_primitive(cfg.model, train_fov_diameter=datamodule.train_fov_diameter,
                                         preprocess=datamodule.preprocess)
    elif stage == "mask":
        def new_model():
            torch.manual_seed(0)
            model = instantiate_primitive(cfg.model, source_size=datamodule.source_size)
            model.set_fov(datamodule.fov)
            return model
    else:
        def new_model():
            torch.manual_seed(0)
            return instantiate_primitive(cfg.model, train_fov_diameter=datamodule.train_fov_diameter)
    return Subject(stage, cfg, datamodule, new_model, int(cfg.data.batch_size), 1 if stage == "segment" else 2)


class _Ticker(L.Callback):
    def __init__(self, clock: Clock):
        self.clock = clock

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.tick()


def lightning_clock(s: Subject, batches: list, steps: int, warmup: int) -> Clock:
    """Step times of `trainer.fit` with the Trainer the stage builds (its callbacks, logger and
    config), validation off, over `steps` batches after `warmup`."""
    model = s.new_model()
    clock = Clock(warmup)
    trainer = build_trainer(s.cfg, callbacks=[_Ticker(clock)], max_steps=(warmup + steps) * s.optimizer_steps,
                            limit_val_batches=0, num_sanity_val_steps=0, val_check_interval=None,
                            check_val_every_n_epoch=None, enable_model_summary=False)
    trainer.fit(model, train_dataloaders=DataLoader(Cycle(batches, warmup + steps), batch_size=None))
    return clock


def plain_clock(s: Subject, batches: list, steps: int, warmup: int, precision: str | None = None) -> Clock:
    """Step times of the same step as a plain PyTorch loop (no Trainer, no logging), in the config's
    `trainer.precision` (bf16 autocast for bf16-mixed, as Lightning does) unless `precision` is given."""
    model = s.new_model().train()
    step = PLAIN_STEPS[s.stage](model, warmup + steps)
    bf16 = str(precision or s.cfg.trainer.precision).startswith(("bf16", "16"))
    clock = Clock(warmup)
    for i in range(warmup + steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            step(batches[i % len(batches)])
        clock.tick()
    return clock


def alternate(stage: str, steps: int, warmup: int, rounds: int,
              clocks: dict[str, Callable[..., Clock]]) -> tuple[Subject, dict[str, list[Clock]]]:
    """The stage's subject, and {side: [its Clock per round]} for each side's clock function
    (called as clock(subject, batches, steps, warmup)) on the same batches; the order is reversed
    every other round so that a drift in the machine's speed hits both sides alike."""
    s = subject(stage)
    batches = s.batches()
    results = {side: [] for side in clocks}
    for r in range(rounds):
        for side in (list(clocks) if r % 2 == 0 else list(clocks)[::-1]):
            results[side].append(clocks[side](s, batches, steps, warmup))
    return s, results


def _segment_step(model, total_steps: int):
    h = model.hparams
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=h.lr, weight_decay=h.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=h.lr, total_steps=total_steps, pct_start=0.1)

    def step(batch):
        logits = model.net(batch["image"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["mask"]) + h.dice_weight * soft_dice_loss(logits, batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return step


def _dcgan_step(model, total_steps: int):
    h, g, d = model.hparams, model.generator, model.discriminator
    opt_g, opt_d = model.configure_optimizers()

    def step(batch):
        real = model.apply_fov(model._real_batch(batch))
        fake = model.apply_fov(g(g.sample_noise(real.shape[0], device=real.device)))
        d_loss = discriminator_loss(d(model.augment(real)), d(model.augment(fake.detach())), h.loss)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        d.requires_grad_(False)
        g_loss = generator_loss(d(model.augment(fake)), h.loss)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d.requires_grad_(True)
        model.update_ema()
    return step


def _pix2pix_step(model, total_steps: int):
    """ImageGAN.training_step without Lightning: the same losses (weighted L1, the vessel critic on D's
    optimizer, the FOV depth channel and the EMA painter when the config has them), so both sides do the same work."""
    h, g, d, critic = model.hparams, model.generator, model.discriminator, model.vessel_critic
    opt_g, opt_d = model.configure_optimizers()
    done = 0

    def step(batch):
        nonlocal done
        mask, fov = batch["mask"], batch["fov"]
        cond = condition(mask, fov, model._depth(batch))
        real = composite(batch["image"], fov)
        fake = composite(g(cond), fov)
        d_loss = h.d_loss_scale * discriminator_loss(d(model._pair(cond, real)),
                                                     d(model._pair(cond, fake.detach())), h.loss)
        if critic is not None:
            d_loss = d_loss + model._critic_loss(real, mask, fov)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        d.requires_grad_(False)
        g_loss = generator_loss(d(model._pair(cond, fake)), h.loss) + h.l1_weight * model._l1(fake, real, mask)
        if critic is not None:
            critic.requires_grad_(False)
            g_loss = g_loss + h.critic_weight * model._critic_loss(fake, mask, fov)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        d.requires_grad_(True)
        if critic is not None:
            critic.requires_grad_(True)
        if model.generator_ema is not None:
            ema_update(model.generator_ema, g, done, h.ema_decay)
        done += 1
    return step


PLAIN_STEPS = {"segment": _segment_step, "mask": _dcgan_step, "image": _pix2pix_step}
