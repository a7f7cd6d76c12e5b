"""The single-GAN baseline (stage=single): one DCGAN from noise straight to an image *and* its vessel mask.

Guibas et al. (2017) compare their two-stage pipeline with one GAN from noise to an image; to
train a segmenter on its output it must also produce the mask, so the generator has 4 channels,
RGB + mask, all in [-1, 1]. The FOV is handled as in Stage I: the fixed majority FOV of the
training data, black image and background mask outside it.
"""

import numpy as np
import torch

from synthmed_lightning.models.gan_base import GANModule
from synthmed_lightning.visualize import mask_tile, to_uint8


class SingleGAN(GANModule):
    """Noise z -> (4, S, S): channels 0-2 the RGB image, channel 3 the vessel mask (> 0)."""

    CHANNELS = 4  # generator output channels
    STAGE = "single"
    color_channels = 3  # DiffAugment's colour jitter on RGB only; the mask channel keeps its levels

    def _real_batch(self, batch: dict) -> torch.Tensor:
        return torch.cat([batch["image"], batch["mask"]], dim=1)

    def generate(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """`n` samples of the EMA generator, the same for a seed: {"image": (n, 3, S, S) in
        [-1, 1] (-1 outside the FOV), "mask": (n, 1, S, S) float in {0, 1}, "fov": (n, 1, S, S)
        float in {0, 1}}, on the module's device."""
        out = self.generate_raw(n, seed)
        fov = self.fov.expand(n, 1, -1, -1).clone()
        return {"image": out[:, :3].clamp(-1, 1), "mask": self.binary_mask(out[:, 3:4]), "fov": fov}

    def _extra_statistics(self, samples: dict, reference: dict, fov: np.ndarray) -> dict[str, float]:
        """Colour and image/mask agreement inside the FOV, for samples and real images (0..1 scale):
        per-channel means, and the vessel contrast (green background minus green vessel), which
        is clearly positive only when the generated vessels are drawn where the mask says."""
        stats = {}
        for prefix, items in (("", samples), ("real_", self._reference_samples(reference))):
            image = (items["image"].float().cpu().numpy() + 1) / 2  # (N, 3, S, S)
            mask = items["mask"].cpu().numpy()[:, 0] > 0.5
            inside = np.broadcast_to(fov, mask.shape)
            for c, name in enumerate("rgb"):
                stats[f"{prefix}mean_{name}"] = float(image[:, c][inside].mean())
            green = image[:, 1]
            vessel, background = green[mask & inside], green[~mask & inside]
            stats[f"{prefix}vessel_contrast"] = float(background.mean() - vessel.mean()) if vessel.size and background.size else 0.0
        return stats

    def _tiles(self, samples: dict[str, torch.Tensor], fov: np.ndarray) -> list[np.ndarray]:
        """Each sample as image | mask side by side."""
        images = samples["image"].float().cpu()
        masks = samples["mask"].cpu().numpy()[:, 0]
        return [np.concatenate([to_uint8(im), np.repeat(mask_tile(m, fov)[..., None], 3, axis=2)], axis=1)
                for im, m in zip(images, masks)]
