"""The LightningDataModule every segmentation-style stage shares."""

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from synthmed_lightning.data.datasets import FullImageDataset, PatchDataset
from synthmed_lightning.data.loading import make_loader, make_train_loader
from synthmed_lightning.data.readers import dataset_spec, read_dataset, read_labelled
from synthmed_lightning.data.sample import Sample
from synthmed_lightning.data.transforms import DEFAULT_PREPROCESS, input_channels, resize_sample, training_augmentation
from synthmed_lightning.errors import ConfigError


class VesselDataModule(L.LightningDataModule):
    """Training patches from the train split of dataset `name` at `root` (minus `val_count`
    images held out by `split_seed`), whole validation images, and whole test images from the
    `test` dataset ({name, root, reader}; default: this dataset's `test_split`) at native size.
    `extra_train` datasets ([{name, root, reader}, ...]) add their train splits to the training
    images only (validation stays on this dataset): e.g. real + synthetic training. They supply
    `extra_train_share` of the training patches (uniform over images within each part), so 200
    synthetic images do not drown 16 real ones. The default, 0.1, was chosen on DRIVE's validation
    images (quick profile, dual-GAN pairs; README): 0.5 / 0.2 / 0.1 gave val F1 0.778 / 0.785 / 0.791.

    With `train_count` set, only that many of the training images left after the validation split
    are kept (the validation images stay the same, so validation is comparable across counts),
    drawn by a generator seeded with (`split_seed`, `train_draw`): another draw, another subset.
    Within one draw the subsets are nested (k images are the first k of one random order), so a
    larger k only adds images.

    With `fov_diameter` set, training images are resampled so their FOV is that many pixels
    across; evaluation images stay native and the model resamples them (see `Segmenter`).

    With `fov_depth`, training patches also carry their FOV depth map (`transforms.fov_depth`),
    Stage II's position channel when `model.fov_depth` is on.
    """

    def __init__(self, name: str, root: str | None = None, reader: dict | None = None,
                 test: dict | None = None, patch_size: int = 128,
                 batch_size: int = 8, patches_per_epoch: int = 800, val_count: int = 4,
                 split_seed: int = 0, fov_diameter: float | None = None,
                 preprocess: dict | None = None, augmentation: str = "default",
                 test_split: str = "test", num_workers: int | str = "auto", pin_memory: bool | str = "auto",
                 extra_train: list[dict] | None = None, extra_train_share: float = 0.1,
                 train_count: int | None = None, train_draw: int = 0, fov_depth: bool = False):
        super().__init__()
        self.source = dataset_spec(name, root, reader)
        self.test_source = dataset_spec(**test) if test else None
        self.extra_sources = [dataset_spec(**extra) for extra in extra_train or []]
        if not 0.0 < extra_train_share < 1.0:
            raise ConfigError(f"data.extra_train_share={extra_train_share}: must be between 0 and 1")
        self.extra_train_share = extra_train_share
        if train_count is not None and (not _whole(train_count) or train_count < 1):
            raise ConfigError(f"data.train_count={train_count}: must be a whole number >= 1 (null: every training image)")
        if not _whole(train_draw) or train_draw < 0:
            raise ConfigError(f"data.train_draw={train_draw}: must be a whole number >= 0")
        self.train_count = train_count
        self.train_draw = train_draw
        self.train_weights: list[float] | None = None
        self.poisson_sample_rate: float | None = None  # set for DP-SGD (privacy=dp): see make_train_loader
        self.patch_size = patch_size
        self.fov_depth = fov_depth
        self.batch_size = batch_size
        self.patches_per_epoch = patches_per_epoch
        self.val_count = val_count
        self.split_seed = split_seed
        self.fov_diameter = fov_diameter
        self.preprocess = dict(preprocess or DEFAULT_PREPROCESS)
        self.augmentation = augmentation
        self.test_split = test_split
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_samples: list[Sample] | None = None
        self.val_samples: list[Sample] = []
        self.test_samples: list[Sample] | None = None
        input_channels(self.preprocess["mode"])

    @property
    def in_channels(self) -> int:
        return input_channels(self.preprocess["mode"])

    @property
    def train_fov_diameter(self) -> float:
        """The FOV scale the model is trained at: `fov_diameter`, else the training images' median."""
        self._setup_fit()
        return float(self.fov_diameter or np.median([s.fov_diameter for s in self.train_samples]))

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate"):
            self._setup_fit()
        if stage in (None, "test", "predict"):
            self._setup_test()

    def _setup_fit(self) -> None:
        if self.train_samples is not None:
            return
        samples = read_labelled(self.source, "train")
        if self.val_count >= len(samples):
            raise ConfigError(f"data.val_count={self.val_count} leaves no training image ({len(samples)} in the train split)")
        order = np.random.default_rng(self.split_seed).permutation(len(samples))
        self.val_samples = [samples[i] for i in sorted(order[: self.val_count])]
        train = self._subset([samples[i] for i in sorted(order[self.val_count:])])
        extra = [sample for source in self.extra_sources for sample in read_labelled(source, "train")]
        if extra:
            share = self.extra_train_share
            self.train_weights = [(1 - share) / len(train)] * len(train) + [share / len(extra)] * len(extra)
        train += extra
        if self.fov_diameter:
            train = [resize_sample(s, self.fov_diameter / s.fov_diameter) for s in train]
        self.train_samples = train

    def _subset(self, train: list[Sample]) -> list[Sample]:
        """`train_count` of the training images (all with None), drawn by (`split_seed`, `train_draw`)."""
        if self.train_count is None:
            return train
        if self.train_count > len(train):
            raise ConfigError(f"data.train_count={self.train_count}: only {len(train)} training images are left "
                              f"after data.val_count={self.val_count} held out for validation")
        order = np.random.default_rng([self.split_seed, self.train_draw]).permutation(len(train))
        return [train[i] for i in sorted(order[: self.train_count])]

    def _setup_test(self) -> None:
        if self.test_samples is None:
            self.test_samples = read_dataset(self.test_source or self.source, self.test_split)

    def train_dataloader(self) -> DataLoader:
        augmentation = training_augmentation(self.augmentation, self.in_channels)
        dataset = PatchDataset(self.train_samples, self.patch_size, self.patches_per_epoch,
                               augmentation=augmentation, weights=self.train_weights,
                               with_fov_depth=self.fov_depth, **self.preprocess)
        return make_train_loader(dataset, self.batch_size, self.num_workers, self.pin_memory, self.trainer,
                                 self.poisson_sample_rate)

    def val_dataloader(self) -> DataLoader:
        return self._loader(FullImageDataset(self.val_samples, **self.preprocess), 1)

    def test_dataloader(self) -> DataLoader:
        return self._loader(FullImageDataset(self.test_samples, **self.preprocess), 1)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def _loader(self, dataset, batch_size: int) -> DataLoader:
        return make_loader(dataset, batch_size, self.num_workers, self.pin_memory, trainer=self.trainer)


def _whole(value) -> bool:
    """An int, not a bool (YAML's true is an int to Python)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
