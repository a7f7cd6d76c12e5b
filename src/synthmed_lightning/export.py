"""Writing image/mask datasets that the `data=folder` loader reads, with a verifiable manifest.

Layout (docs/design.md, the export):
    <out_dir>/images/<stem>.png   RGB
    <out_dir>/masks/<stem>.png    vessel mask, 0/255
    <out_dir>/fov/<stem>.png      field of view, 0/255
    <out_dir>/manifest.json       sha256 of every file above, plus what the caller adds
                                  (generator checkpoints' sha256, resolved config, seed)

Atomic: everything is written into a hidden temporary folder beside `out_dir` and renamed into
place only once complete, manifest last. A crash leaves the old `out_dir` untouched (or none) and
at most a `.<name>.tmp-<pid>-*` folder, never a half-written folder that looks complete; the next
export to the same `out_dir` deletes such folders whose process is gone. An existing
`out_dir` is refused unless `overwrite=True`, in which case the complete new folder replaces it,
and then only if it is empty or an earlier export holding nothing its manifest does not list.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from synthmed_lightning.errors import ConfigError, DataError

MANIFEST = "manifest.json"
FORMAT = "synthmed-dataset/1"
FOLDERS = ("images", "masks", "fov")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def encode_png(image: np.ndarray) -> bytes:
    """Deterministic PNG bytes of an RGB (H, W, 3) or greyscale (H, W) uint8 array."""
    array = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, data = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise OSError("cannot encode PNG")
    return data.tobytes()


def _binary_png(mask: np.ndarray, what: str, stem: str) -> bytes:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{what} of {stem} must be (H, W), got shape {mask.shape}")
    return encode_png(((mask > 0.5) if mask.dtype.kind == "f" else (mask > 0)).astype(np.uint8) * 255)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class DatasetWriter:
    """Context manager that writes a `data=folder` dataset atomically:

        with DatasetWriter(out_dir, overwrite=False) as writer:
            for ...:
                writer.add(stem, image, mask, fov)
            writer.commit({"seed": 0, ...})

    Leaving the block without `commit` (an exception, Ctrl-C) deletes the temporary folder.
    """

    def __init__(self, out_dir: str | Path, overwrite: bool = False):
        self.out_dir = Path(out_dir).absolute()
        self.overwrite = overwrite
        if self.out_dir.exists() or self.out_dir.is_symlink():
            if not overwrite:
                raise ConfigError(f"out_dir={self.out_dir} already exists: choose another folder or pass overwrite=true "
                                  "to replace an earlier export")
            check_replaceable(self.out_dir)
        try:
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataError(f"out_dir={self.out_dir}: cannot create its folder ({error.strerror or error})") from None
        # The writing process's id in the name lets a later writer clear what a killed one left.
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.files: dict[str, str] = {}
        self.stems: list[str] = []
        self.committed = False

    def __enter__(self) -> DatasetWriter:
        self._remove_abandoned_tmp_dirs()
        with self._disk_errors(self.tmp_dir):
            for folder in FOLDERS:
                (self.tmp_dir / folder).mkdir(parents=True)
        return self

    def _remove_abandoned_tmp_dirs(self) -> None:
        """Delete temporary folders of this export left by writers that were killed (SIGKILL, power
        loss): their process no longer exists. A writer still running keeps its folder."""
        for folder in self.out_dir.parent.glob(f".{self.out_dir.name}.tmp-*"):
            pid = folder.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)

    def __exit__(self, *exc_info) -> None:
        if not self.committed:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def _write(self, relative: str, data: bytes) -> None:
        if relative in self.files:
            raise DataError(f"two images share the name {relative}: file stems must be unique")
        with self._disk_errors(self.tmp_dir / relative), open(self.tmp_dir / relative, "wb") as handle:
            handle.write(data)
        self.files[relative] = hashlib.sha256(data).hexdigest()

    def add(self, stem: str, image: np.ndarray, mask: np.ndarray, fov: np.ndarray) -> None:
        """image: (H, W, 3) uint8 RGB; mask, fov: (H, W), {0, 1} or 0/255 (floats thresholded at 0.5)."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {stem} must be (H, W, 3) uint8, got {image.dtype} {image.shape}")
        for what, array in (("mask", mask), ("fov", fov)):
            if np.shape(array) != image.shape[:2]:
                raise ValueError(f"{what} of {stem} is {np.shape(array)}, its image {image.shape[:2]}")
        self._write(f"images/{stem}.png", encode_png(image))
        self._write(f"masks/{stem}.png", _binary_png(mask, "mask", stem))
        self._write(f"fov/{stem}.png", _binary_png(fov, "fov", stem))
        self.stems.append(stem)

    def commit(self, extra: dict | None = None) -> dict:
        """Write manifest.json (last), fsync, and move the folder into place. Returns the manifest."""
        if not self.stems:
            raise DataError(f"nothing to write to {self.out_dir}: no samples")
        manifest = {"format": FORMAT, "count": len(self.stems), **(extra or {}), "files": dict(sorted(self.files.items()))}
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
        self.manifest_sha256 = hashlib.sha256(text.encode()).hexdigest()  # publish it: `stage=verify manifest_sha256=`
        with self._disk_errors(self.tmp_dir / MANIFEST):
            (self.tmp_dir / MANIFEST).write_text(text)
            _fsync_tree(self.tmp_dir)
        if self.out_dir.exists():
            if not self.overwrite:
                raise ConfigError(f"out_dir={self.out_dir} appeared while writing: refusing to replace it (overwrite=true would)")
            check_replaceable(self.out_dir)  # again: it may have changed while this export was written
            old = self.out_dir.parent / f".{self.out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.out_dir, old)  # the complete old folder, then the complete new one
            os.replace(self.tmp_dir, self.out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp_dir, self.out_dir)
        self.committed = True
        return manifest


    @contextmanager
    def _disk_errors(self, path: Path):
        """A full disk or a read-only folder is the user's to fix: one line, and the old out_dir intact
        (the temporary folder is removed on the way out)."""
        try:
            yield
        except OSError as error:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            raise DataError(f"cannot write {path}: {error.strerror or error}; nothing was exported, "
                            f"{self.out_dir} is unchanged") from None


def _fsync_tree(folder: Path) -> None:
    """Flush the files to disk before the rename makes them visible (a power cut keeps both or neither)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def read_manifest(folder: str | Path) -> dict:
    """The manifest of an exported dataset, checked for shape: a JSON object whose `files` maps
    relative paths to sha256 strings. DataError (one line, naming the file) otherwise."""
    path = Path(folder) / MANIFEST
    if path.is_symlink() or not path.is_file():
        raise DataError(f"{path} not found (or not a regular file): not an exported dataset")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path} is not an export manifest: a JSON object expected, got a {type(manifest).__name__}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise DataError(f"{path} is not an export manifest: `files` must map file names to sha256 strings")
    return manifest


def _walk(folder: Path) -> tuple[set[str], set[str], list[str]]:
    """(regular files, folders, other entries) under `folder` as relative paths, never following a
    symbolic link: a link is reported, not entered (it could lead out of the export)."""
    files, folders, odd = set(), set(), []
    for root, dirs, names in os.walk(folder):  # followlinks=False
        base = Path(root).relative_to(folder)
        for name in sorted(dirs + names):
            path, relative = Path(root) / name, (base / name).as_posix()
            if path.is_symlink():
                odd.append(f"symbolic link: {relative}")
            elif name in dirs:
                folders.add(relative)
            elif path.is_file():
                files.add(relative)
            else:
                odd.append(f"not a regular file: {relative}")
    return files, folders, odd


def _foreign_entries(folder: Path, listed: set[str]) -> list[str]:
    """What an export holds besides its manifest and listed files: unlisted files and folders,
    symbolic links, devices. Empty for an export that is exactly what was written."""
    files, folders, odd = _walk(folder)
    parents = {parent.as_posix() for relative in listed for parent in Path(relative).parents if parent != Path(".")}
    unlisted = sorted(files - listed - {MANIFEST}) + sorted(f"{d}/" for d in folders - parents)
    return odd + [f"not in the manifest: {relative}" for relative in unlisted]


def check_replaceable(folder: str | Path) -> None:
    """`overwrite=true` replaces only what this project wrote: an empty folder, or an earlier export
    whose manifest lists every file it holds. Anything else (a folder of checkpoints, a thesis) is
    refused in one line, so a mistyped out_dir never deletes someone's work."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        raise ConfigError(f"out_dir={folder} exists and is not a folder: overwrite=true replaces only an earlier export")
    if not any(folder.iterdir()):
        return
    try:
        listed = set(read_manifest(folder)["files"])
    except DataError:
        raise ConfigError(f"out_dir={folder} is not an earlier export (no valid {MANIFEST}): overwrite=true replaces "
                          "only an export this project wrote; choose another out_dir") from None
    foreign = _foreign_entries(folder, listed)
    if foreign:
        raise ConfigError(f"out_dir={folder} holds more than its export ({foreign[0]}): overwrite=true would delete "
                          "it, so it is refused; move that away or choose another out_dir")


def verify_manifest(folder: str | Path) -> list[str]:
    """Problems found by recomputing every file's sha256: missing, changed and unlisted files,
    symbolic links and anything else that is not a listed regular file. An empty list means the
    dataset is exactly what was exported."""
    folder = Path(folder)
    try:
        files = read_manifest(folder)["files"]
    except DataError as error:
        return [str(error)]
    if not files:
        return [f"{folder / MANIFEST} lists no files"]
    present, _, _ = _walk(folder)
    problems = []
    for relative, expected in sorted(files.items()):
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            problems.append(f"unsafe path in the manifest: {relative}")
        elif relative not in present:
            problems.append(f"missing: {relative}")
        elif sha256_file(folder / relative) != expected:
            problems.append(f"changed: {relative} (sha256 differs from the manifest)")
    return problems + _foreign_entries(folder, set(files))


def check_export(folder: str | Path, manifest_sha256: str | None = None, key: str = "synthetic_dir") -> dict:
    """The verified manifest of an exported dataset; `DataError` (one line, naming the bad file) otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{key}={folder}: folder not found")
    problems = verify_manifest(folder)
    actual = sha256_file(folder / MANIFEST) if (folder / MANIFEST).is_file() else None
    if manifest_sha256 and actual and actual != str(manifest_sha256).lower():
        problems.insert(0, f"changed: {MANIFEST} (its sha256 is {actual}, expected {manifest_sha256})")
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DataError(f"{key}={folder} does not match its manifest: {problems[0]}{more}")
    manifest = read_manifest(folder)
    return {**manifest, "manifest_sha256": actual}
