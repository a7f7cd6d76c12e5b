"""Stage runners: one function per `stage=<name>`, each taking the composed config."""

import importlib

from omegaconf import DictConfig

from synthmed_lightning.errors import ConfigError

# stage name -> "module:function", imported only when that stage runs.
STAGES = {
    "segment": "synthmed_lightning.stages.segment:run_segment",
    "evaluate": "synthmed_lightning.stages.evaluate:run_evaluate",
    "mask": "synthmed_lightning.stages.mask:run_mask",
    "single": "synthmed_lightning.stages.single:run_single",
    "image": "synthmed_lightning.stages.image:run_image",
    "generate": "synthmed_lightning.stages.generate:run_generate",
    "pseudolabel": "synthmed_lightning.stages.pseudolabel:run_pseudolabel",
    "study": "synthmed_lightning.stages.study:run_study",
    "verify": "synthmed_lightning.stages.verify:run_verify",
    "audit": "synthmed_lightning.stages.audit:run_audit_stage",
}


def run_stage(cfg: DictConfig) -> dict | None:
    if cfg.stage not in STAGES:
        raise ConfigError(f"unknown stage '{cfg.stage}': expected one of {', '.join(STAGES)}")
    module, function = STAGES[cfg.stage].split(":")
    return getattr(importlib.import_module(module), function)(cfg)
