"""A folder of images read one at a time, so that thousands of large photographs (an unlabelled
MESSIDOR folder, a synthetic export) never sit in memory together."""

from collections.abc import Iterator
from pathlib import Path

from synthmed_lightning.data.io import IMAGE_SUFFIXES
from synthmed_lightning.data.readers import load_pair, match_stem
from synthmed_lightning.data.sample import Sample
from synthmed_lightning.errors import DataError


def folder_images(root: Path) -> tuple[list[Path], Path | None]:
    """The image files of `root/images/` (and `root/fov/` if present), or of `root` itself."""
    if not root.is_dir():
        raise DataError(f"data.root={root}: folder not found")
    image_dir = root / "images" if (root / "images").is_dir() else root
    images = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir} (expected root/images/<name>.png or a folder of images)")
    stems = [p.stem for p in images]
    duplicate = next((s for s in stems if stems.count(s) > 1), None)
    if duplicate:
        raise DataError(f"two images in {image_dir} share the name {duplicate!r}: stems must be unique")
    fov_dir = root / "fov" if image_dir != root and (root / "fov").is_dir() else None
    return images, fov_dir


def stream_folder(images: list[Path], fov_dir: Path | None) -> Iterator[Sample]:
    """Each image with its FOV (read from `fov_dir`, or derived from the image), one at a time."""
    for path in images:
        yield load_pair(path, None, match_stem(fov_dir, path.stem))
