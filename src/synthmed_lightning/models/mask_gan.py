"""Stage I (Guibas et al. 2017): a DCGAN from noise to a binary vessel mask with its FOV, and an
optional mask refiner that draws the DCGAN's coarse layout at the data's native resolution.

The generator has one output channel, the mask in [-1, 1] (vessel > 0); the FOV is the fixed
majority FOV of the training data. Everything shared with the single-GAN baseline (manual D/G
steps, DiffAugment, EMA generator, sample statistics) is in `GANModule` (`gan_base.py`).

The refiner (`models/components/refiner.py`, docs/stage1.md) makes Stage I a two-scale generator:
the DCGAN draws the layout at `image_size`, the refiner the native-resolution vessels on it. It
learns from native crops of the real training masks that `MaskDataModule` serves in the same
batches (`coarse_crop`: the crop of the training mask as the DCGAN sees it, squared, resized and
upsampled back; `native_crop`: the real mask there), one step per iteration after the generator's.
It has no effect on D and G: it is built without drawing from the global random streams and
trains on its own loss.
"""

import typing

import cv2
import numpy as np
import torch

from synthmed_lightning.data.edge_fade import EdgeFade
from synthmed_lightning.data.mask_data import coarse_to_native, fov_to_native, from_square
from synthmed_lightning.data.transforms import resize_binary, rotate_about_centre
from synthmed_lightning.metrics.mask_stats import skeleton
from synthmed_lightning.models.components.refiner import (MaskRefiner, cap_width, join_fragments, refiner_loss,
                                                           remove_fragments)
from synthmed_lightning.models.gan_base import GANModule, _build

# Said by the stage before any data is read, and by the constructor for models built in Python.
REFINER_UNDER_DP = ("model.refiner: not possible with privacy=dp (the refiner learns from the real masks without "
                    "DP-SGD); pass model.refiner=null")

# The random stream (with the seed) of the depths at which `edge_fade` ends vessels at the FOV's edge.
_EDGE_FADE_STREAM = 0xED6E
# ... and of the angles `layout_rotation` turns the samples by (the noise z stays the seed's own).
_ROTATION_STREAM = 0x2074

# Native-size masks refined per forward pass in `generate_native`: bounds memory at any n.
_REFINE_CHUNK = 4


class MaskGAN(GANModule):
    """Noise z (generator.z_dim) -> (1, S, S) vessel mask, S = generator.image_size (32..512, a power of two).

    `generate(n, seed)` draws the square samples; `generate_native(n, seed, height, width)` the
    masks the synthetic-dataset export writes, at native size. `source_size` is the (height, width)
    of the training images (median), the size a square sample maps back to with
    `data.mask_data.from_square`.

    Refiner settings: `refiner`, a `_target_` dict (`MaskRefiner`) or None (samples are upsampled as
    before, and checkpoints from before the refiner load unchanged); `refiner_lr`; `refiner_batch`,
    how many of a batch's native crops each refiner step uses (None: all); `refiner_threshold` on its
    vessel probability; `join_gap`, the gap (in coarse pixels, S px across the image) across which
    fragments of the refined mask are joined, and `min_fragment`, the area (in coarse pixels) below
    which the fragments left are dropped (0 turns either off; `models/components/refiner.py`);
    `refiner_reads_coverage` (set by the stage from `data.soft_masks`): the refiner reads the
    generator's vessel coverage in [0, 1] instead of the thresholded sample, so vessels thinner than
    a coarse pixel reach it as faint lines rather than as broken pieces.

    `edge_fade` (`data/edge_fade.py`, fitted on the training masks by the stage; None: off): native
    masks end their vessels short of the FOV's edge at depths drawn from the real masks'.
    `max_vessel_width` (native px; None: off; `stages/mask.py` fits it on the training masks for
    `fit`): refined vessels wider than it are narrowed to it (`cap_width`), as a refiner draws a trunk
    as wide as its coarse coverage allows.
    `layout_rotation` (degrees; 0: off): every native sample's layout is turned about the FOV's
    centre by an angle drawn uniformly within ±it (the refiner's input, upsampled to native size, so
    nothing is lost to resampling). The training masks are turned so (`data.rotate`), but a DCGAN on
    20 masks draws its vessels along the same routes in every sample; drawing the turn at sampling
    time gives that variety back (docs/stage1.md). The coarse samples of `generate` are not turned.
    `thin_threshold` (a probability below `refiner_threshold`; None: off): the centre lines of what
    the refiner finds at this lower probability join the mask as 1-px vessels. Its faint vessels are
    the thin ones, and thresholded at `refiner_threshold` they are dropped or, at a lower threshold
    for the whole mask, drawn as wide as the trunks' fringe; their centre lines add the length of
    thin vessels without widening any (docs/stage1.md).
    """

    CHANNELS = 1  # generator output channels
    STAGE = "mask"
    color_channels = 1  # DiffAugment's colour jitter on the mask itself (brightness/contrast)

    def __init__(self, generator: dict, discriminator: dict, refiner: dict | None = None, refiner_lr: float = 1e-3,
                 refiner_batch: int | None = None, refiner_threshold: float = 0.5, join_gap: float = 3.0,
                 min_fragment: float = 1.5, refiner_reads_coverage: bool = False, edge_fade: dict | None = None,
                 max_vessel_width: float | None = None, layout_rotation: float = 0.0,
                 thin_threshold: float | None = None, **gan_settings):
        if refiner is not None and gan_settings.get("privacy"):
            raise ValueError(REFINER_UNDER_DP)
        if not 0.0 < refiner_threshold < 1.0:
            raise ValueError(f"model.refiner_threshold={refiner_threshold}: must be between 0 and 1")
        if max_vessel_width is not None and not (isinstance(max_vessel_width, (int, float)) and max_vessel_width >= 1):
            raise ValueError(f"model.max_vessel_width={max_vessel_width}: must be at least 1 px, or null: off "
                             "(`fit` is fitted by stage=mask)")
        if thin_threshold is not None and not 0.0 < thin_threshold < refiner_threshold:
            raise ValueError(f"model.thin_threshold={thin_threshold}: must be between 0 and model.refiner_threshold "
                             f"({refiner_threshold}), or null: off")
        if not 0.0 <= layout_rotation <= 180.0:
            raise ValueError(f"model.layout_rotation={layout_rotation}: must be between 0 and 180 degrees")
        if refiner_batch is not None and refiner_batch < 1:
            raise ValueError(f"model.refiner_batch={refiner_batch}: must be at least 1 (or null: the whole batch)")
        self.edge_fade = EdgeFade.from_dict(edge_fade) if edge_fade is not None else None
        super().__init__(generator, discriminator, **gan_settings)
        self.refiner = None
        if refiner is not None:
            with torch.random.fork_rng(devices=[]):  # its initial weights draw nothing D and G would have drawn
                self.refiner = _build(refiner, "refiner")
            if not isinstance(self.refiner, MaskRefiner):
                raise ValueError(f"model.refiner: expected a MaskRefiner, got {type(self.refiner).__name__}")

    def _real_batch(self, batch: dict) -> torch.Tensor:
        return batch["mask"]

    # ------------------------------------------------------------------ refiner training
    def configure_optimizers(self):
        opt_g, opt_d = super().configure_optimizers()
        if self.refiner is not None:
            # A parameter group of G's optimizer rather than a third optimizer: Lightning counts every
            # optimizer step in global_step, and budgets assume two per iteration. Adam keeps its state
            # per parameter, so G's own steps are unchanged.
            opt_g.add_param_group({"params": list(self.refiner.parameters()), "lr": self.hparams.refiner_lr,
                                   "betas": (0.9, 0.999)})
        return [opt_g, opt_d]

    def _generator_side_step(self, batch: dict) -> None:
        if self.refiner is None:
            return
        if "coarse_crop" not in batch:
            raise ValueError("MaskGAN has a refiner but the batch holds no native crops: set data.native_crop > 0")
        count = self.hparams.refiner_batch
        coarse, native = batch["coarse_crop"][:count], batch["native_crop"][:count]
        loss = refiner_loss(self.refiner(coarse), native)
        self.manual_backward(loss)
        self.log("train/refiner_loss", loss.detach())

    # ------------------------------------------------------------------ sampling
    def generate(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """`n` samples of the EMA generator, the same for a seed: {"mask": (n, 1, S, S) float in
        {0, 1}, "fov": (n, 1, S, S) float in {0, 1}}, on the module's device."""
        out = self.generate_raw(n, seed)
        fov = self.fov.expand(n, 1, -1, -1).clone()
        return {"mask": self.binary_mask(out[:, :1]), "fov": fov}

    @torch.no_grad()
    def generate_native(self, n: int, seed: int, height: int, width: int) -> dict[str, np.ndarray]:
        """The masks `generate(n, seed)` lays out, at (height, width): {"mask": (n, H, W) uint8 in
        {0, 1}, "fov": (n, H, W) uint8 in {0, 1}}, vessels only inside the FOV. With a refiner it
        draws them at the training images' size (`source_size`; resized when another size is asked
        for), else they are the squares mapped back with `from_square`; then `edge_fade` ends their
        vessels short of the FOV's edge."""
        raw = self.generate_raw(n, seed)[:, :1]
        fov = fov_to_native(_as_uint8(self.fov[0, 0]), height, width)
        limit = self.hparams.layout_rotation
        angles = np.random.default_rng([seed, _ROTATION_STREAM]).uniform(-limit, limit, n) if limit else None
        if self.refiner is None:
            masks = [from_square(_as_uint8(m[0]), height, width, binary=True) for m in self.binary_mask(raw)]
            if angles is not None:
                masks = [rotate_about_centre(m, a, fov > 0, cv2.INTER_NEAREST) for m, a in zip(masks, angles)]
        else:
            coarse = self.coverage(raw) * self.fov if self.hparams.refiner_reads_coverage else self.binary_mask(raw)
            refine_size = tuple(self.hparams.source_size or (height, width))
            masks = [m if m.shape == (height, width) else resize_binary(m, (width, height))
                     for m in self.refine(coarse, *refine_size, angles)]
        masks = np.stack(masks).astype(np.uint8) & fov
        if self.edge_fade is not None:
            rng = np.random.default_rng([seed, _EDGE_FADE_STREAM])
            masks = np.stack([self.edge_fade.apply(m, fov, rng) for m in masks])
        return {"mask": masks, "fov": np.broadcast_to(fov, masks.shape).copy()}

    @torch.no_grad()
    def refine(self, coarse: torch.Tensor, height: int, width: int, angles: np.ndarray | None = None) -> list[np.ndarray]:
        """(n, 1, S, S) coarse masks in [0, 1] (thresholded, or coverage) -> n uint8 {0, 1} masks at (height, width): upsampled as
        the refiner's training inputs were (`coarse_to_native`), turned by `angles` (degrees, one per mask; None: not turned),
        refined, thresholded (with the centre lines of `thin_threshold`'s), fragments joined, specks dropped and trunks
        narrowed to `max_vessel_width` (inside the FOV mapped the same way)."""
        h = self.hparams
        fov = fov_to_native(_as_uint8(self.fov[0, 0]), height, width) > 0
        pitch = max(height, width) / coarse.shape[-1]  # native px per coarse px
        upsampled = [coarse_to_native(m[0].float().cpu().numpy(), height, width) for m in coarse]
        if angles is not None:
            upsampled = [rotate_about_centre(u, a, fov) for u, a in zip(upsampled, angles)]
        upsampled = np.stack(upsampled)
        inputs = torch.from_numpy(upsampled.astype(np.float32))[:, None]
        was_training = self.refiner.training
        self.refiner.eval()
        device = self.fov.device
        probability = torch.cat([torch.sigmoid(self.refiner(chunk.to(device))).cpu()
                                 for chunk in inputs.split(_REFINE_CHUNK)])
        self.refiner.train(was_training)
        out = []
        for p in probability[:, 0].numpy():
            mask = (p >= h.refiner_threshold) & fov
            if h.thin_threshold is not None:  # the faint vessels' centre lines, 1 px wide
                mask |= skeleton(p >= h.thin_threshold) & fov
            if h.join_gap > 0:
                mask = join_fragments(mask, h.join_gap * pitch) & fov
            mask = remove_fragments(mask, h.min_fragment * pitch**2)
            if h.max_vessel_width is not None:
                mask = cap_width(mask, h.max_vessel_width)
            out.append(mask.astype(np.uint8))
        return out


# `checkpoints.restore_module` type-checks a checkpoint's hyperparameters against the constructor's
# annotations: those passed on through **gan_settings are GANModule's.
MaskGAN.__init__.__annotations__ = {**typing.get_type_hints(GANModule.__init__),
                                    **typing.get_type_hints(MaskGAN.__init__)}


def _as_uint8(tensor: torch.Tensor) -> np.ndarray:
    """(S, S) float {0, 1} tensor -> uint8 {0, 1} array."""
    return (tensor.detach().float().cpu().numpy() > 0.5).astype(np.uint8)
