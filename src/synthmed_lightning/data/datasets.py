"""torch Datasets over decoded `Sample`s: random training patches and whole images for evaluation."""

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from synthmed_lightning.data.sample import Sample
from synthmed_lightning.data.transforms import fov_depth, preprocess, to_tensor_layout


class PatchDataset(Dataset):
    """`length` random square patches centred inside the FOV, augmented.

    Each item's RNG mixes numpy's global RNG (seeded by Lightning's `seed_everything(workers=True)`,
    advancing every epoch) with the item index, which differs between DDP ranks: runs are
    reproducible, epochs differ, and ranks never draw the same patches.
    With `with_fov_depth`, items also carry "fov_depth": the patch of the whole image's
    `fov_depth` map, augmented with it (Stage II's position channel).
    """

    def __init__(self, samples: list[Sample], patch_size: int, length: int, mode: str = "rgb",
                 clahe: bool = False, augmentation: A.Compose | None = None, weights: list[float] | None = None,
                 with_fov_depth: bool = False):
        self.patch_size = patch_size
        # Probability of drawing each image (None: uniform), e.g. to balance real and synthetic images.
        self.weights = None if weights is None else np.asarray(weights, float) / np.sum(weights)
        self.length = length
        self.augmentation = augmentation
        self.images = [preprocess(s.image, mode, clahe) for s in samples]
        self.masks = [s.mask for s in samples]
        self.fovs = [s.fov for s in samples]
        self.fov_pixels = [np.argwhere(s.fov > 0) for s in samples]
        self.depths = [fov_depth(s.fov) for s in samples] if with_fov_depth else None

    def __len__(self) -> int:
        return self.length

    @property
    def num_images(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([np.random.randint(2**31), index])
        k = rng.integers(len(self.images)) if self.weights is None else rng.choice(len(self.images), p=self.weights)
        return self.draw(int(k), rng)

    def draw(self, k: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """A random patch of image k, augmented with `rng`."""
        cy, cx = self.fov_pixels[k][rng.integers(len(self.fov_pixels[k]))]
        arrays = [self.images[k], self.masks[k], self.fovs[k]] + ([self.depths[k]] if self.depths else [])
        image, *masks = (crop_centered(a, cy, cx, self.patch_size) for a in arrays)
        if self.augmentation is not None:
            self.augmentation.set_random_seed(int(rng.integers(2**31)))
            out = self.augmentation(image=image, masks=masks)
            image, masks = out["image"], out["masks"]
        as_channel = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]  # noqa: E731
        item = {"image": torch.from_numpy(to_tensor_layout(image)), "mask": as_channel(masks[0]), "fov": as_channel(masks[1])}
        if self.depths:
            item["fov_depth"] = as_channel(masks[2])
        return item


class FullImageDataset(Dataset):
    """Whole images at native size (batch size 1), for validation, test and inference."""

    def __init__(self, samples: list[Sample], mode: str = "rgb", clahe: bool = False):
        self.samples = samples
        self.mode = mode
        self.clahe = clahe

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        item = {
            "image": torch.from_numpy(to_tensor_layout(preprocess(s.image, self.mode, self.clahe))),
            "rgb": torch.from_numpy(s.image),
            "fov": torch.from_numpy(s.fov.astype(np.float32))[None],
            "fov_diameter": torch.tensor(s.fov_diameter),
            "stem": s.stem,
            "index": index,
        }
        if s.mask is not None:
            item["mask"] = torch.from_numpy(s.mask.astype(np.float32))[None]
        return item


def crop_centered(array: np.ndarray, cy: int, cx: int, size: int) -> np.ndarray:
    """A size x size crop centred at (cy, cx), zero-padded where it leaves the image."""
    half = size // 2
    pad = [(half, size), (half, size)] + [(0, 0)] * (array.ndim - 2)
    padded = np.pad(array, pad)
    return padded[cy: cy + size, cx: cx + size]

