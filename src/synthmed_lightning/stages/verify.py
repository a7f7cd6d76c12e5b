"""stage=verify: check an exported dataset against its manifest.json before trusting it.

`synthetic_dir=<folder written by generate or pseudolabel>` recomputes the sha256 of every file and
fails in one line naming the first missing, changed or unlisted file (all of them go to
`<run dir>/verify.json`). A manifest edited to match edited files is caught by comparing the
manifest's own sha256 with the one published beside the data: `manifest_sha256=<hex>`.
Nothing is unpickled: the manifest is JSON, the images are decoded by nobody here.
"""

import logging
from pathlib import Path

from omegaconf import DictConfig

from synthmed_lightning.errors import DataError
from synthmed_lightning.export import MANIFEST, read_manifest, sha256_file, verify_manifest
from synthmed_lightning.stages.common import run_dir, write_json

log = logging.getLogger(__name__)


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


def run_verify(cfg: DictConfig) -> dict:
    folder = Path(cfg.synthetic_dir)
    report = {"synthetic_dir": str(folder.absolute()), "ok": False, "problems": verify_manifest(folder)}
    try:
        manifest = check_export(folder, cfg.get("manifest_sha256"))
    except DataError:
        write_json(run_dir(cfg) / "verify.json", report)
        raise
    report.update(ok=True, files=len(manifest["files"]), manifest_sha256=manifest["manifest_sha256"])
    write_json(run_dir(cfg) / "verify.json", report)
    log.info("%s: all %d files match %s (its sha256: %s)", folder, report["files"], MANIFEST, report["manifest_sha256"])
    return report
