"""Whole-image data for the generative stages: real vessel masks (Stage I, `stage=mask`) and
(image, mask) pairs (single-GAN baseline, `stage=single`) at one square resolution.

Every training image of the dataset (never its test split) is padded to a square (centred, zeros)
and resized to `image_size`: images with area averaging, FOVs linearly and thresholded at 0.5,
vessel masks linearly and thresholded at 0.5 by default (`mask_resize: linear`; thin vessels
survive a small downscale), or by their area coverage (`mask_resize: area`, threshold e.g. 0.25;
far below native size linear sampling leaves thin vessels as dotted fragments). `from_square`
maps a generated square back to a source size (the inverse of `to_square`), which is how
synthetic sets reach the real resolution.

With `native_crop` > 0 every training item also carries a pair of native-resolution crops for
Stage I's mask refiner (`models/components/refiner.py`): `coarse_crop`, the training mask as the
DCGAN sees it (squared, resized, thresholded) upsampled back to native size by `from_square`'s
mapping, and `native_crop`, the real mask at the same place; flipped and turned by 90 degrees
together.

The FOV of generated samples is not generated: it is the pixelwise majority of the training FOVs
at `image_size` (`MaskDataModule.fov`), a fixed disc for fundus cameras (see `GANModule`), which
`fov_to_native` maps to a source size with a smooth rim.
"""

import albumentations as A
import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from synthmed_lightning.data.loading import make_train_loader
from synthmed_lightning.data.readers import dataset_spec, read_labelled
from synthmed_lightning.data.transforms import resize_binary, to_tensor_layout
from synthmed_lightning.errors import ConfigError

IMAGE_SIZES = tuple(2**k for k in range(5, 10))  # what DCGANGenerator/Discriminator accept: 32..512

# A majority FOV smaller than this share of the image means the data has no usable FOV (e.g. a
# folder dataset whose derived FOV failed): the whole square is used instead.
_MIN_FOV_FRACTION = 0.01


def check_image_size(image_size, key: str = "data.image_size") -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size not in IMAGE_SIZES:
        raise ConfigError(f"{key}={image_size}: must be a power of two from 32 to 512 ({', '.join(map(str, IMAGE_SIZES))})")
    return image_size


def to_square(array: np.ndarray) -> np.ndarray:
    """Zero-pad (H, W[, C]) to (M, M[, C]), M = max(H, W), with the content centred."""
    h, w = array.shape[:2]
    m = max(h, w)
    top, left = (m - h) // 2, (m - w) // 2
    pad = [(top, m - h - top), (left, m - w - left)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, pad)


def from_square(array: np.ndarray, height: int, width: int, binary: bool | None = None) -> np.ndarray:
    """Inverse of `to_square` + resize: a (S, S[, C]) square back to (height, width[, C]).

    The square is resized to max(height, width) and the centre crop taken. Binary arrays (uint8
    {0, 1}, or `binary=True`) are resized linearly and thresholded at 0.5, images linearly.
    """
    m = max(height, width)
    if binary is None:
        binary = array.dtype in (np.uint8, bool) and array.ndim == 2 and array.max(initial=0) <= 1
    if binary:
        square = resize_binary(array.astype(np.uint8), (m, m))
    else:
        square = cv2.resize(array, (m, m), interpolation=cv2.INTER_LINEAR)
    return _centre_crop(square, height, width)


def _centre_crop(square: np.ndarray, height: int, width: int) -> np.ndarray:
    """The (height, width) centre of a square of side max(height, width): what `to_square` padded."""
    m = square.shape[0]
    top, left = (m - height) // 2, (m - width) // 2
    return square[top: top + height, left: left + width]


def fov_to_native(fov: np.ndarray, height: int, width: int) -> np.ndarray:
    """(S, S) {0, 1} FOV -> (height, width) uint8 {0, 1}: `from_square`'s geometry with a smooth rim.

    Upsampled and thresholded alone, a disc drawn at S px keeps stair steps one coarse pixel tall
    on its rim (9 native px at 64 px on DRIVE), which no camera's FOV has and which the export's
    images and masks would carry. Blurring the upsampled square over two coarse pixels before the
    threshold rounds them off; a disc's rim moves inward by under a pixel (at 64 px on DRIVE the
    result overlaps the training FOVs' native majority with IoU 0.994, the stepped disc 0.987).
    """
    m = max(height, width)
    square = from_square(np.asarray(fov, np.float32), m, m, binary=False)  # upsampled linearly, not yet cropped
    square = cv2.GaussianBlur(square, (0, 0), sigmaX=2 * m / fov.shape[0], borderType=cv2.BORDER_CONSTANT)
    return (_centre_crop(square, height, width) >= 0.5).astype(np.uint8)


def coarse_to_native(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """(S, S) coarse mask in [0, 1] (thresholded or coverage) -> (height, width) float32 in [0, 1]: `from_square`'s geometry,
    interpolated linearly and not thresholded (what Stage I's refiner reads)."""
    return from_square(np.asarray(mask, np.float32), height, width, binary=False)


def square_resize_image(image: np.ndarray, size: int) -> np.ndarray:
    square = to_square(image)
    interpolation = cv2.INTER_AREA if square.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


MASK_RESIZE_MODES = ("linear", "area")


def square_resize_binary(mask: np.ndarray, size: int, mode: str = "linear", threshold: float = 0.5) -> np.ndarray:
    """Square a {0, 1} mask and resize it to (size, size), thresholded at `threshold`.

    "linear" interpolates (what `resize_binary` does): unbiased vessel fraction, and thin vessels
    survive a small downscale (DRIVE 584 -> 256 or 512). Far below native size (a factor of 3 and
    more) it samples a thin vessel only here and there, leaving dotted fragments. "area" averages
    the vessel coverage of each output pixel: with a threshold below 0.5 (e.g. 0.25) every vessel
    stays a connected line, a little thicker than its share of the pixel.
    """
    return (square_resize_coverage(mask, size, mode) >= threshold).astype(np.uint8)


def square_resize_coverage(mask: np.ndarray, size: int, mode: str = "linear") -> np.ndarray:
    """Square a {0, 1} mask and resize it to (size, size) float32 in [0, 1]: the vessel coverage of
    each output pixel (see `square_resize_binary`, which thresholds it)."""
    if mode not in MASK_RESIZE_MODES:
        raise ConfigError(f"data.mask_resize={mode!r}: expected one of {', '.join(MASK_RESIZE_MODES)}")
    square = to_square(mask).astype(np.float32)
    interpolation = cv2.INTER_AREA if mode == "area" and square.shape[0] > size else cv2.INTER_LINEAR
    return np.clip(cv2.resize(square, (size, size), interpolation=interpolation), 0.0, 1.0)


def mask_augmentation(strength: str = "default", rotate: float = 10.0) -> A.Compose:
    """Geometric augmentation of whole masks (and images): flips (left/right eye, upper/lower
    arcade) and small rotations. Masks use nearest interpolation so they stay binary."""
    if strength == "none":
        return A.Compose([])
    if strength != "default":
        raise ConfigError(f"data.augmentation={strength!r}: expected 'default' or 'none'")
    return A.Compose([
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.Affine(rotate=(-rotate, rotate), border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
    ])


class WholeMaskDataset(Dataset):
    """`length` random training items (mask [+ image]) at full square size, augmented.

    Items: "mask" (1, S, S) in [-1, 1] and, with images, "image" (3, S, S) in [-1, 1]. The RNG mixes
    numpy's global RNG (seeded by `seed_everything(workers=True)`) with the index, as `PatchDataset`.
    """

    def __init__(self, masks: np.ndarray, images: np.ndarray | None, length: int,
                 augmentation: A.Compose | None = None, native_pairs: list | None = None, native_crop: int = 0):
        self.masks = masks
        self.images = images
        self.length = length
        self.augmentation = augmentation
        self.native_pairs = native_pairs  # per training item: (coarse mask upsampled, real mask) at native size
        self.native_crop = native_crop

    def __len__(self) -> int:
        return self.length

    @property
    def num_images(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([np.random.randint(2**31), index])
        return self.draw(int(rng.integers(len(self.masks))), rng)

    def draw(self, k: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Training item k, augmented with `rng`."""
        mask = self.masks[k]
        image = self.images[k] if self.images is not None else None
        if self.augmentation is not None:
            self.augmentation.set_random_seed(int(rng.integers(2**31)))
            out = self.augmentation(image=image if image is not None else mask, mask=mask)
            mask = out["mask"]
            image = out["image"] if image is not None else None
        item = {"mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32) * 2 - 1)[None]}
        if image is not None:
            item["image"] = torch.from_numpy(to_tensor_layout(np.ascontiguousarray(image)))
        if self.native_pairs is not None and self.native_crop:
            # drawn after the whole item's augmentation: the GAN's items do not depend on it
            item.update(native_crops(*self.native_pairs[k], self.native_crop, rng))
        return item


def native_crops(coarse: np.ndarray, native: np.ndarray, size: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A random `size` x `size` crop of a training mask at native size: "coarse_crop" (1, size, size)
    float in [0, 1] and "native_crop" (1, size, size) float in {0, 1}, flipped and turned by a
    multiple of 90 degrees together (a coarse pixel grid stays a pixel grid)."""
    height, width = native.shape
    top, left = int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = {}
    for key, array in (("coarse_crop", coarse), ("native_crop", native)):
        crop = np.rot90(array[top:top + size, left:left + size], turns)
        crop = crop[:, ::-1] if flip else crop
        out[key] = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None]
    return out


class _ReferenceSet(Dataset):
    """One item: every real training mask (N, 1, S, S) {0, 1} [+ images (N, 3, S, S) in [-1, 1]],
    what validation compares the fixed-noise samples with."""

    def __init__(self, reference: dict[str, torch.Tensor]):
        self.reference = reference

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.reference


class MaskDataModule(L.LightningDataModule):
    """Real masks (and, with `with_images`, their images) of dataset `name`'s training split,
    squared and resized to `image_size`, for the GAN stages.

    Selected by `conf/stage/mask.yaml` / `single.yaml` through `data._target_`, so every data
    config (`data=drive data.root=...`) works unchanged; it reads `name`, `root`, `reader`,
    `batch_size`, `augmentation`, `num_workers`, `pin_memory` from there, and `image_size`,
    `samples_per_epoch`, `rotate`, `mask_resize`, `mask_threshold`, `soft_masks`, `coverage_power`, `with_images` from the stage
    config (`samples_per_epoch` only sets how often an epoch ends), and `native_crop`, the side of the
    refiner's native crops (0: none; see the module docstring). The segmentation-only keys of
    `_vessels.yaml` (patch_size, val_count, test, preprocess, fov_diameter, ...) are accepted and
    ignored: a GAN learns from every training image and is validated by sample statistics.

    With `soft_masks` the GAN trains on each pixel's vessel coverage (in [0, 1]) instead of the
    thresholded mask, and its samples are thresholded at `mask_threshold`: a discriminator that
    sees binary real masks beside a tanh output tells them apart by their saturation alone, and
    the generator answered with salt-and-pepper vessel texture; coverage maps remove that cue.
    `coverage_power` < 1 (soft masks only) serves the GAN coverage ** power (`gan_masks`).
    """

    def __init__(self, name: str, root: str | None = None, reader: dict | None = None, image_size: int = 64,
                 batch_size: int = 8, samples_per_epoch: int = 1024, augmentation: str = "default",
                 rotate: float = 10.0, mask_resize: str = "linear", mask_threshold: float = 0.5,
                 soft_masks: bool = False, coverage_power: float = 1.0, with_images: bool = False,
                 native_crop: int = 0, num_workers: int | str = "auto", pin_memory: bool | str = "auto", **segmentation_only):
        super().__init__()
        self.source = dataset_spec(name, root, reader)
        self.image_size = check_image_size(image_size)
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.augmentation = augmentation
        self.rotate = rotate
        self.mask_resize = mask_resize
        self.mask_threshold = mask_threshold
        self.soft_masks = soft_masks
        self.coverage_power = coverage_power
        self.with_images = with_images
        self.native_crop = native_crop
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        mask_augmentation(augmentation, rotate)  # fail on a bad setting before reading any data
        if mask_resize not in MASK_RESIZE_MODES:
            raise ConfigError(f"data.mask_resize={mask_resize!r}: expected one of {', '.join(MASK_RESIZE_MODES)}")
        if not 0.0 < mask_threshold < 1.0:
            raise ConfigError(f"data.mask_threshold={mask_threshold}: must be between 0 and 1")
        if not 0.0 < coverage_power <= 1.0:
            raise ConfigError(f"data.coverage_power={coverage_power}: must be in (0, 1]")
        if isinstance(native_crop, bool) or not isinstance(native_crop, int) or native_crop < 0:
            raise ConfigError(f"data.native_crop={native_crop}: must be a whole number of pixels (0: no refiner crops)")
        if samples_per_epoch < batch_size:
            raise ConfigError(f"data.samples_per_epoch={samples_per_epoch} must be at least data.batch_size={batch_size}")
        self.masks: np.ndarray | None = None   # (N, S, S) uint8 {0, 1}
        self.coverage: np.ndarray | None = None  # (N, S, S) float32 in [0, 1], with soft_masks
        self.fovs: np.ndarray | None = None    # (N, S, S) uint8 {0, 1}
        self.images: np.ndarray | None = None  # (N, S, S, 3) uint8 RGB
        self.native_pairs: list | None = None  # with native_crop: (coarse upsampled, real mask) per item
        self.source_size: list[int] | None = None
        self.stems: list[str] = []
        self.poisson_sample_rate: float | None = None  # set for DP-SGD (privacy=dp): see make_train_loader

    def prepare(self) -> None:
        """Read and resize the training split once (also called by `setup`)."""
        if self.masks is not None:
            return
        samples = read_labelled(self.source, "train")
        size = self.image_size
        coverage = np.stack([square_resize_coverage(s.mask, size, self.mask_resize) for s in samples])
        self.masks = (coverage >= self.mask_threshold).astype(np.uint8)
        self.coverage = coverage if self.soft_masks else None
        self.fovs = np.stack([square_resize_binary(s.fov, size) for s in samples])
        if self.with_images:
            self.images = np.stack([square_resize_image(s.image, size) for s in samples])
        self.source_size = [int(np.median([s.image.shape[0] for s in samples])),
                            int(np.median([s.image.shape[1] for s in samples]))]
        self.stems = [s.stem for s in samples]
        # The masks at their own size, for statistics that need native resolution (thin vessels).
        self.native = [(s.mask > 0, s.fov > 0) for s in samples]
        if self.native_crop:
            self.native_pairs = self._native_pairs()

    def _native_pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per training item (coarse mask upsampled to native size float32, real mask uint8): what the
        refiner learns to map, the first through exactly the degradation the DCGAN's data went through."""
        smallest = min(min(mask.shape) for mask, _ in self.native)
        if self.native_crop > smallest:
            raise ConfigError(f"data.native_crop={self.native_crop} is larger than the smallest training mask "
                              f"({smallest} px): lower profile.mask.refiner_crop")
        return [(coarse_to_native(coarse, *mask.shape), mask.astype(np.uint8))
                for coarse, (mask, _) in zip(self.coarse_masks(), self.native)]

    def coarse_masks(self) -> np.ndarray:
        """(N, S, S) the training masks as the GAN learns them: the coverage with `soft_masks`, else
        thresholded."""
        self.prepare()
        return self.coverage if self.soft_masks else self.masks

    @property
    def gan_power(self) -> float:
        """The power the GAN's items are raised to: `coverage_power` with soft masks, else 1 (binary
        masks are left as they are). The stage hands it to the model, which undoes it on its samples."""
        return self.coverage_power if self.soft_masks else 1.0

    def gan_masks(self) -> np.ndarray:
        """(N, S, S) what the GAN's items are drawn from: `coarse_masks` raised to `gan_power` (< 1 lifts
        a thin vessel's faint coverage towards the thick ones', so the discriminator sees capillaries)."""
        coarse = self.coarse_masks()
        return coarse ** self.gan_power if self.gan_power != 1.0 else coarse

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    @property
    def fov(self) -> np.ndarray:
        """(S, S) uint8: the pixelwise majority of the training FOVs, the FOV every sample gets."""
        self.prepare()
        fov = (self.fovs.mean(axis=0) >= 0.5).astype(np.uint8)
        return fov if fov.mean() >= _MIN_FOV_FRACTION else np.ones_like(fov)

    def reference(self) -> dict[str, torch.Tensor]:
        """Every real training item, unaugmented: "mask" (N, 1, S, S) {0, 1} [+ "image" in [-1, 1]]."""
        self.prepare()
        out = {"mask": torch.from_numpy(self.masks.astype(np.float32))[:, None]}
        if self.images is not None:
            out["image"] = torch.from_numpy(np.stack([to_tensor_layout(im) for im in self.images]))
        return out

    def train_dataloader(self) -> DataLoader:
        dataset = WholeMaskDataset(self.gan_masks(), self.images, self.samples_per_epoch,
                                   mask_augmentation(self.augmentation, self.rotate), self.native_pairs, self.native_crop)
        return make_train_loader(dataset, self.batch_size, self.num_workers, self.pin_memory, self.trainer,
                                 self.poisson_sample_rate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_ReferenceSet(self.reference()), batch_size=1)
