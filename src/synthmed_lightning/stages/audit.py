"""stage=audit: the privacy audit of an exported synthetic set against the real data (`audit.run_audit`).

    python -m synthmed_lightning stage=audit synthetic_dir=<export> data=drive data.root=<DRIVE> \
           segment_ckpt=<stage=segment checkpoint>

The real dataset's train split is the training set, its test split (or `data.test`) the held-out
set. Writes `audit.json`, `nearest/worst_XX.png` and a flat `metrics.json` in the run directory.
"""

from omegaconf import DictConfig, OmegaConf

from synthmed_lightning.audit import AuditSettings, run_audit
from synthmed_lightning.data.readers import dataset_spec
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.stages.common import run_dir
from synthmed_lightning.utils import pick_device, write_json


def run_audit_stage(cfg: DictConfig) -> dict:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    settings = OmegaConf.to_container(cfg.audit, resolve=True)
    settings["device"] = str(pick_device(str(settings.get("device", "auto"))))
    try:
        settings = AuditSettings(**settings)
    except TypeError as error:  # a setting AuditSettings does not have
        raise ConfigError(f"audit: {error}") from None
    out = run_dir(cfg)
    report = run_audit(cfg.synthetic_dir, dataset_spec(data["name"], data.get("root"), data.get("reader")), out, settings,
                       holdout=dataset_spec(**data["test"]) if data.get("test") else None,
                       holdout_split=data.get("test_split", "test"), segment_ckpt=cfg.get("segment_ckpt"),
                       manifest_sha256=cfg.get("manifest_sha256"))
    metrics = {"audit/near_copies": report["near_copies"], "audit/mia_auc": report["mia_auc"]}
    for space, values in report["spaces"].items():
        for key in ("near_copies", "holdout_near_copies", "near_copy_threshold", "mia_auc", "synthetic_vs_holdout_median"):
            metrics[f"audit/{space}/{key}"] = values[key]
        for key in ("nn_synthetic_to_train", "nn_train_to_train", "nn_holdout_to_train"):
            metrics[f"audit/{space}/{key}_median"] = values[key]["median"]
    write_json(out / "metrics.json", metrics)
    return report
