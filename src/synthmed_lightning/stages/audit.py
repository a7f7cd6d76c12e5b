"""stage=audit: the privacy audit of an exported synthetic set against the real data (`audit.run_audit`).

    python -m synthmed_lightning stage=audit synthetic_dir=<export> segment_ckpt=<stage=segment checkpoint>

The real data is what the export's generators learned from, as the export records it; `data=...`
on the command line chooses it instead, and is refused when it disagrees with that record (unless
`force_data=true`). Its train split is the training set, its test split (or `data.test`) the
held-out set. Writes `audit.json`, `nearest/worst_XX.png` and a flat `metrics.json` in the run
directory, and ends with the findings as log lines (docs/privacy.md).
"""

import logging

from omegaconf import DictConfig, OmegaConf

from synthmed_lightning.audit import AuditSettings, run_audit, summary_lines
from synthmed_lightning.data.readers import dataset_spec
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.stages.common import run_dir
from synthmed_lightning.utils import pick_device, write_json

log = logging.getLogger(__name__)


def data_on_command_line() -> bool:
    """Whether the command line chose the real data (`data=...`, `data.<key>=...`): otherwise `cfg.data`
    is only the default dataset, and the audit takes the one the export records. Outside a Hydra app
    (a config composed in Python) the config is taken as chosen."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return True
    return any(o.lstrip("+~").split("=", 1)[0].split(".", 1)[0].split("@", 1)[0] == "data"
               for o in HydraConfig.get().overrides.task)


def run_audit_stage(cfg: DictConfig) -> dict:
    data = OmegaConf.to_container(cfg.data, resolve=True)
    settings = OmegaConf.to_container(cfg.audit, resolve=True)
    settings["device"] = str(pick_device(str(settings.get("device", "auto"))))
    settings["control_fractions"] = tuple(settings.get("control_fractions") or ())
    try:
        settings = AuditSettings(**settings)
    except TypeError as error:  # a setting AuditSettings does not have
        raise ConfigError(f"audit: {error}") from None
    out = run_dir(cfg)
    chosen = data_on_command_line()
    real = dataset_spec(data["name"], data.get("root"), data.get("reader")) if chosen else None
    holdout = dataset_spec(**data["test"]) if chosen and data.get("test") else None
    report = run_audit(cfg.synthetic_dir, real, out, settings, holdout=holdout,
                       holdout_split=data.get("test_split", "test") if chosen else None,
                       segment_ckpt=cfg.get("segment_ckpt"), manifest_sha256=cfg.get("manifest_sha256"),
                       force_data=bool(cfg.get("force_data", False)))
    write_json(out / "metrics.json", flat_metrics(report))
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        for line in summary_lines(report):
            log.info("%s", line)
    return report


def flat_metrics(report: dict) -> dict:
    """metrics.json: the audit's numbers under flat `audit/...` keys."""
    metrics = {"audit/near_copies": report["near_copies"], "audit/mia_auc": report["mia_auc"],
               "audit/mia_auc_calibrated": report["mia_auc_calibrated"], "time/total_s": report["seconds"]}
    for space, values in report["spaces"].items():
        prefix = f"audit/{space}"
        for key in ("near_copies", "holdout_near_copies", "near_copy_threshold", "mia_auc", "synthetic_vs_holdout_median"):
            metrics[f"{prefix}/{key}"] = values[key]
        for key in ("nn_synthetic_to_train", "nn_train_to_train", "nn_holdout_to_train"):
            metrics[f"{prefix}/{key}_median"] = values[key]["median"]
        for attack in ("raw", "calibrated"):
            metrics.update(_attack_metrics(f"{prefix}/{attack}", values[attack]))
        if "negative_control" in values:
            metrics.update(_attack_metrics(f"{prefix}/negative/calibrated", values["negative_control"]["calibrated"]))
            for control in values["positive_controls"]:
                metrics[f"{prefix}/positive_{control['fraction']:g}/detected"] = int(control["detected"])
                metrics[f"{prefix}/positive_{control['fraction']:g}/planted_flagged"] = control["planted_flagged"]
    return metrics


def _attack_metrics(prefix: str, attack: dict) -> dict:
    low, high = attack["auc_ci95"]
    return {f"{prefix}/auc": attack["auc"], f"{prefix}/auc_low": low, f"{prefix}/auc_high": high,
            **{f"{prefix}/tpr_at_fpr_{level.rstrip('%')}pct": value for level, value in attack["tpr_at_fpr"].items()}}
