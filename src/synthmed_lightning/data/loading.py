"""DataLoader settings chosen for the machine (`data.num_workers` / `data.pin_memory`: `auto`).

Every reader decodes its files once, when the DataModule is set up: datasets hold decoded arrays
(`Sample`, preprocessed once), so an epoch never re-decodes a TIFF or GIF and workers only crop,
augment and convert. That work is cheap next to a training step (`make bench` measures the ratio),
which is what the `auto` rules below rest on.
"""

import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from synthmed_lightning.errors import ConfigError

# More workers than this rarely help: items are crops of images already in memory.
_MAX_AUTO_WORKERS = 8


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity / cgroup-restricted sets), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def loader_settings(num_workers="auto", pin_memory="auto", trainer=None) -> dict:
    """`num_workers`, `pin_memory`, `persistent_workers` for a DataLoader.

    auto workers: on a GPU, the training process mostly waits for the device, so each process
    (one per device under DDP) gets its share of the cores minus one for itself, at most 8; on
    CPU, 0: the training step already keeps every core busy with torch threads, and a worker would
    take a core from it to save the small share of time spent on data. auto pin_memory: on CUDA GPUs.
    Workers persist between epochs (the datasets are small and epochs short).
    """
    check_loader_settings(num_workers, pin_memory)
    accelerator = type(getattr(trainer, "accelerator", None)).__name__
    on_gpu = accelerator not in ("CPUAccelerator", "NoneType")
    if num_workers == "auto":
        processes = max(1, int(getattr(trainer, "num_devices", 1) or 1)) if trainer is not None else 1
        num_workers = min(_MAX_AUTO_WORKERS, max(0, usable_cores() // processes - 1)) if on_gpu else 0
    if pin_memory == "auto":
        pin_memory = accelerator == "CUDAAccelerator"  # pinned memory speeds up host-to-CUDA copies only
    return {"num_workers": num_workers, "pin_memory": pin_memory, "persistent_workers": num_workers > 0}


def check_loader_settings(num_workers, pin_memory) -> None:
    if num_workers != "auto" and (isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0):
        raise ConfigError(f"data.num_workers={num_workers!r}: expected auto or an integer >= 0")
    if pin_memory != "auto" and not isinstance(pin_memory, bool):
        raise ConfigError(f"data.pin_memory={pin_memory!r}: expected auto, true or false")


def make_loader(dataset: Dataset, batch_size: int, num_workers="auto", pin_memory="auto", trainer=None) -> DataLoader:
    """The evaluation DataLoader every DataModule here uses (training: `make_train_loader`, with the
    same settings): no shuffling (items are drawn at random already), workers and pinned memory as
    `loader_settings` decides for the trainer's machine."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, **loader_settings(num_workers, pin_memory, trainer))


def make_train_loader(dataset: Dataset, batch_size: int, num_workers="auto", pin_memory="auto", trainer=None,
                      poisson_sample_rate: float | None = None) -> DataLoader:
    """The training loader, a `ResumableLoader`: full batches of random draws (as `make_loader`), or
    with `poisson_sample_rate` (DP-SGD, `models/dp.py`) batches in which each training image appears
    once with that probability, as many batches per epoch as there are full batches."""
    settings = loader_settings(num_workers, pin_memory, trainer)
    if poisson_sample_rate is None:
        return ResumableLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=True, **settings)
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    records = ImageRecords(dataset)
    sampler = UniformWithReplacementSampler(num_samples=len(records), sample_rate=poisson_sample_rate,
                                            steps=max(1, len(dataset) // batch_size))
    return ResumableLoader(records, batch_sampler=sampler, collate_fn=CollateAllowingEmpty(records[0]), **settings)


class ResumableLoader(DataLoader):
    """A training DataLoader whose checkpointed state lets a run killed mid-epoch resume exactly
    where it stopped: the same remaining batches and the same random numbers as without the kill.

    Lightning saves a training loader's `state_dict()` in every checkpoint and hands it back to
    `load_state_dict` on resume. A plain DataLoader has none, so a resumed run would start the
    epoch's batches afresh with other random numbers and end with other weights. The state here
    is the process's random state (`random_state`) when this epoch's iteration began and now, and
    the batches served so far. Lightning iterates a sized loader without prefetching, so at a
    checkpoint the batches served are the batches trained on, and "now" is the boundary before
    the next one.

    Resuming replays the epoch from its starting random state (so the DataLoader's base seed comes
    out as before), drops the batches already trained on, then sets the random state of the
    boundary: the next batch and the training step after it draw what they drew in the
    uninterrupted run. Bit for bit on CPU, where loading runs in the training process (`auto`: no
    workers). Persistent workers (the GPU default) carry their random streams over from earlier
    epochs, which a new process cannot replay, and GPU kernels are not bit-deterministic anyway.
    """

    _served = 0
    _epoch_start: dict | None = None
    _resume: dict | None = None

    def __iter__(self):
        resume, self._resume = self._resume, None
        if resume is not None and resume["served"] >= len(self):  # saved at an epoch's end: the next starts afresh
            set_random_state(resume["now"])
            resume = None
        if resume is not None:
            set_random_state(resume["epoch_start"])
        self._epoch_start = random_state()
        self._served = 0
        batches = super().__iter__()  # now, not at the first batch: its base seed is drawn where a DataLoader draws it
        if resume is not None:
            for _ in range(resume["served"]):
                next(batches)
            self._served = resume["served"]
            set_random_state(resume["now"])
        return self._counted(batches)

    def _counted(self, batches):
        for batch in batches:
            self._served += 1
            yield batch

    def state_dict(self) -> dict:
        return {"served": self._served, "epoch_start": self._epoch_start or random_state(), "now": random_state()}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state


def random_state() -> dict:
    """The process's random state (Python, numpy's global, torch's CPU generator and, once CUDA is in
    use, the current GPU's) as tensors and plain numbers: a checkpoint holding it still loads with
    `weights_only=True`. Under DDP every rank seeds alike and draws alike, so rank 0's state (the
    one a checkpoint keeps) stands for each rank's own device."""
    version, internal, gauss = random.getstate()
    _, keys, position, has_gauss, cached_gauss = np.random.get_state()
    state = {"python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
             "numpy": [torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gauss)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_random_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))
    keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class ImageRecords(Dataset):
    """Item k: a fresh random draw (crop, augmentation) from training image k of a dataset whose
    `draw(k, rng)` makes one, and whose `num_images` counts them: the unit DP-SGD protects."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return self.dataset.num_images

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return self.dataset.draw(int(k), np.random.default_rng([np.random.randint(2**31), int(k)]))


class CollateAllowingEmpty:
    """default_collate, and for an empty Poisson batch the example's tensors with 0 rows."""

    def __init__(self, example: dict[str, torch.Tensor]):
        self.empty = {key: value.new_zeros((0, *value.shape)) for key, value in example.items()}

    def __call__(self, items: list) -> dict[str, torch.Tensor]:
        return default_collate(items) if items else dict(self.empty)
