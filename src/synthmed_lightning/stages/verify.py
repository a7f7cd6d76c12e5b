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
from synthmed_lightning.export import MANIFEST, check_export, verify_manifest
from synthmed_lightning.stages.common import run_dir
from synthmed_lightning.utils import write_json

log = logging.getLogger(__name__)


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
