"""Readers for the dataset layouts users bring. Each returns a list of `Sample` for a split.

Layouts (docs/design.md describes them):
- drive:   root/{training,test}/images/NN_{training,test}.tif, root/*/1st_manual/NN_manual1.gif,
           root/*/mask/NN_{training,test}_mask.gif (test also has 2nd_manual/NN_manual2.gif).
- chase:   root/Image_01L.jpg + root/Image_01L_1stHO.png (+ _2ndHO.png); FOV derived from the image.
           Split: the first 20 images (patients 01-10) train, the last 8 (11-14) test.
- folder:  root/images/<stem>.*, root/masks/<stem>.* [+ root/fov/<stem>.*], optionally one such
           folder per split (root/train/..., root/test/...); without split folders every split
           is the whole folder. masks/ may be absent for unlabelled images (pseudo-labelling).
- phantom: procedurally rendered, no files (`data/phantom.py`).
"""

from collections.abc import Callable
from pathlib import Path

from synthmed_lightning.data.io import (IMAGE_SUFFIXES, check_readable, check_same_size, derive_fov, read_binary,
                                        read_rgb)
from synthmed_lightning.data.sample import Sample
from synthmed_lightning.errors import ConfigError, DataError

SPLITS = ("train", "test", "all")


def read_drive(root: str | Path, split: str, annotator: int = 1) -> list[Sample]:
    root = Path(root)
    layout = "root/training/images/21_training.tif, root/training/1st_manual/21_manual1.gif, root/training/mask/21_training_mask.gif"
    if not (root / "training" / "images").is_dir():
        raise DataError(f"data.root={root} does not hold the DRIVE layout (expected {layout}, and test/ likewise)")
    folders = {"train": ["training"], "test": ["test"], "all": ["training", "test"]}[split]
    samples = []
    for folder in folders:
        images = sorted((root / folder / "images").glob("*.tif"))
        if not images:
            raise DataError(f"no .tif images in {root / folder / 'images'} (expected {layout})")
        for image_path in images:
            number = image_path.stem.split("_")[0]
            mask_path = root / folder / f"{'1st' if annotator == 1 else '2nd'}_manual" / f"{number}_manual{annotator}.gif"
            fov_path = root / folder / "mask" / f"{number}_{folder}_mask.gif"
            samples.append(load_pair(image_path, mask_path, fov_path))
    return samples


def read_chase(root: str | Path, split: str, annotator: int = 1) -> list[Sample]:
    root = Path(root)
    images = sorted(p for p in root.glob("Image_*.jpg")) if root.is_dir() else []
    if not images:
        raise DataError(f"data.root={root} does not hold the CHASE_DB1 layout (expected root/Image_01L.jpg with root/Image_01L_1stHO.png)")
    chosen = {"train": images[:20], "test": images[20:], "all": images}[split] if len(images) > 20 else images
    suffix = "1stHO" if annotator == 1 else "2ndHO"
    return [load_pair(p, p.with_name(f"{p.stem}_{suffix}.png"), None) for p in chosen]


def read_folder(root: str | Path, split: str, require_masks: bool = True) -> list[Sample]:
    root = Path(root)
    base = root / split if (root / split / "images").is_dir() else root
    image_dir = base / "images"
    if not image_dir.is_dir():
        raise DataError(f"data.root={root} does not hold the folder layout (expected root/images/<name>.png and root/masks/<name>.png, optional root/fov/)")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    samples = []
    for image_path in images:
        check_readable(image_path)  # an unreadable image (a link loop...) is named as such, not as a missing mask
        mask_path = match_stem(base / "masks", image_path.stem)
        if mask_path is None and require_masks:
            raise DataError(f"no mask for {image_path}: expected {base / 'masks' / image_path.stem}.<png|gif|tif|...>")
        samples.append(load_pair(image_path, mask_path, match_stem(base / "fov", image_path.stem)))
    return samples


def read_phantom(split: str, count: int = 20, seed: int = 0, height: int = 584, width: int = 565) -> list[Sample]:
    from synthmed_lightning.data.phantom import make_phantom_dataset

    # Train and test are rendered from different seeds, so they never share an image.
    seeds = {"train": [seed], "test": [seed + 100_003], "all": [seed, seed + 100_003]}[split]
    samples = []
    for split_seed in seeds:
        for p in make_phantom_dataset(count, seed=split_seed, height=height, width=width):
            stem = p.stem if split_seed == seed else p.stem.replace("phantom", "phantom_test")
            samples.append(Sample(image=p.image, mask=p.mask, fov=p.fov, stem=stem))
    return samples


READERS: dict[str, Callable[..., list[Sample]]] = {
    "drive": read_drive,
    "chase": read_chase,
    "folder": read_folder,
    "phantom": read_phantom,
}


def dataset_spec(name: str, root: str | None = None, reader: dict | None = None, **options) -> dict:
    """The reader spec of a data config's `name`, `root` and `reader` options (any other option,
    e.g. `annotator` given beside `name`, is a reader option too)."""
    return {"name": name, "root": root, **(reader or {}), **options}


def read_dataset(spec: dict, split: str) -> list[Sample]:
    """Read `split` of the dataset described by a `data.source`-style dict: {name, root?, ...}."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in READERS:
        raise ConfigError(f"unknown dataset name '{name}' (data.source.name): expected one of {', '.join(READERS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}': expected one of {', '.join(SPLITS)}")
    if name == "phantom":
        spec.pop("root", None)
    elif not spec.get("root"):
        raise ConfigError(f"data.root is not set: point it at your {name} dataset")
    elif not Path(spec["root"]).is_dir():
        raise DataError(f"data.root={spec['root']}: folder not found (dataset '{name}')")
    return READERS[name](split=split, **spec)


def read_labelled(spec: dict, split: str) -> list[Sample]:
    """`read_dataset`, refusing images without a vessel mask: what every training stage reads."""
    samples = read_dataset(spec, split)
    unlabelled = [s.stem for s in samples if s.mask is None]
    if unlabelled:
        raise ConfigError(f"training needs vessel masks; {len(unlabelled)} images of dataset '{spec.get('name')}' "
                          f"have none (first: {unlabelled[0]})")
    return samples


def match_stem(folder: Path | None, stem: str) -> Path | None:
    """The image file `folder/<stem>.<any image suffix>`, if there is one."""
    if folder is None or not folder.is_dir():
        return None
    for path in sorted(folder.glob(f"{stem}.*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return path
    return None


def load_pair(image_path: Path, mask_path: Path | None, fov_path: Path | None) -> Sample:
    """Read an image with its (optional) mask and FOV, checking sizes; no FOV file: derive it."""
    image = read_rgb(image_path)
    mask = None
    if mask_path is not None:
        mask = read_binary(mask_path, "mask")
        check_same_size(image, mask, image_path, mask_path, "mask")
    if fov_path is not None:
        fov = read_binary(fov_path, "FOV mask")
        check_same_size(image, fov, image_path, fov_path, "FOV mask")
    else:
        fov = derive_fov(image)
    return Sample(image=image, mask=mask, fov=fov, stem=image_path.stem)
