"""Stage I (Guibas et al. 2017): a DCGAN from noise to a binary vessel mask with its FOV.

The generator has one output channel, the mask in [-1, 1] (vessel > 0); the FOV is the fixed
majority FOV of the training data. Everything shared with the single-GAN baseline (manual D/G
steps, DiffAugment, EMA generator, sample statistics) is in `GANModule` (`gan_base.py`).
"""

import torch

from synthmed_lightning.models.gan_base import GANModule


class MaskGAN(GANModule):
    """Noise z (generator.z_dim) -> (1, S, S) vessel mask, S = generator.image_size (32..512, a power of two).

    `generate(n, seed)` is the API the synthetic-dataset export uses. `source_size` is the
    (height, width) of the training images (median), the size a square sample maps back to
    with `data.mask_data.from_square`.
    """

    CHANNELS = 1  # generator output channels
    STAGE = "mask"
    color_channels = 1  # DiffAugment's colour jitter on the mask itself (brightness/contrast)

    def _real_batch(self, batch: dict) -> torch.Tensor:
        return batch["mask"]

    def generate(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """`n` samples of the EMA generator, the same for a seed: {"mask": (n, 1, S, S) float in
        {0, 1}, "fov": (n, 1, S, S) float in {0, 1}}, on the module's device."""
        out = self.generate_raw(n, seed)
        fov = self.fov.expand(n, 1, -1, -1).clone()
        return {"mask": self.binary_mask(out[:, :1]), "fov": fov}
