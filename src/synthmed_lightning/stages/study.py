"""stage=study: the synthetic-vs-real study end to end (`make reproduce-paper`, SPEC.md item 5).

Plans the steps (`study/plan.py`), runs the unfinished ones as ordinary CLI runs side by side
(`study/runner.py`), then measures fidelity and writes `<out>/results.json` and `<out>/report.md`
(`study/report.py`). A rerun of the same command skips finished steps; a step that was killed
resumes from its last checkpoint.
"""

import json
import logging
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from synthmed_lightning.data.readers import dataset_spec, read_dataset
from synthmed_lightning.errors import ConfigError, DataError
from synthmed_lightning.stages.common import to_primitive, write_json
from synthmed_lightning.study.plan import CONDITIONS, TRAINING_STAGES, StudyPlan
from synthmed_lightning.study.runner import default_parallelism, run_steps

log = logging.getLogger(__name__)

# Command-line overrides passed on to every step (the study's own settings and hydra.* are not).
_FORWARDED = ("data", "paths", "trainer", "logger", "profile", "callbacks", "debug", "seed", "run_group")
# What must not change between a study and its resumption (else finished steps would not match).
_IDENTITY_KEYS = ("profile", "dataset", "conditions", "num_synthetic", "overrides")


def _forwarded_overrides() -> tuple[list[str], list[str]]:
    """(real-data overrides, other overrides) from this command line, for the steps' command lines."""
    data, other = [], []
    for override in HydraConfig.get().overrides.task:
        key = override.lstrip("+~").split("=", 1)[0]
        group = key.split(".", 1)[0].split("@", 1)[0]
        if key in ("data", "profile"):  # the plan selects these itself
            continue
        if group == "data":
            data.append(override)
        elif group in _FORWARDED:
            other.append(override)
    return data, other


def build_plan(cfg: DictConfig) -> StudyPlan:
    study = cfg.study
    unknown = set(study.conditions) - set(CONDITIONS)
    if unknown or not study.conditions:
        raise ConfigError(f"study.conditions={list(study.conditions)}: choose from {', '.join(CONDITIONS)}")
    bad = set(study.overrides or {}) - {*TRAINING_STAGES, "generate", "audit"}
    if bad:
        raise ConfigError(f"study.overrides.{sorted(bad)[0]}: expected one of {', '.join(TRAINING_STAGES)}, generate, audit")
    counts = [int(n) for n in study.synthetic_counts or []]
    if int(study.num_synthetic) < 1 or any(n < 1 for n in counts):
        raise ConfigError(f"study.num_synthetic / study.synthetic_counts must be positive, got {study.num_synthetic} / {counts}")
    data_overrides, other = _forwarded_overrides()
    choices = HydraConfig.get().runtime.choices
    real_data_args = [f"data={choices['data']}", *data_overrides]
    run_group = cfg.get("run_group") or f"study-{Path(study.out_dir).name}"
    common = [f"profile={choices['profile']}", *[o for o in other if not o.startswith("run_group=")],
              f"run_group={run_group}"]
    if "seed=" not in " ".join(common):
        common.append(f"seed={cfg.seed}")
    real = {k: v for k, v in dataset_spec(cfg.data.name, cfg.data.get("root"), to_primitive(cfg.data.reader)).items()
            if v is not None}
    return StudyPlan(out=Path(study.out_dir).absolute(), real_data=real, real_data_args=real_data_args,
                     common_args=common, num_synthetic=int(study.num_synthetic), synthetic_counts=counts,
                     conditions=tuple(study.conditions), audit=bool(study.audit),
                     overrides={k: list(v) for k, v in (study.overrides or {}).items()})


def _check_real_data(spec: dict) -> None:
    """A missing or mis-laid dataset fails here, in one line that says where to put it, before any step."""
    root = spec.get("root")
    if root and not Path(root).is_dir():
        raise DataError(f"data.root={root}: folder not found; put {spec['name'].upper()} there, or point "
                        f"make reproduce-paper DATA_ROOT=<folder holding {Path(root).name}/> (or data.root=<folder>)")
    read_dataset(spec, "train")


def _check_identity(out: Path, identity: dict) -> None:
    """Refuse to resume a study folder made with other settings: its finished steps would not match."""
    path = out / "study.json"
    if path.is_file():
        before = json.loads(path.read_text())
        changed = [k for k in _IDENTITY_KEYS if before.get(k) != identity.get(k)]
        if changed:
            raise ConfigError(f"study.out_dir={out} holds a study with other settings ({changed[0]}: "
                              f"{before.get(changed[0])} there, {identity.get(changed[0])} now): use another out_dir")
    write_json(path, identity)


def _parallelism(cfg: DictConfig) -> tuple[int, int]:
    workers = None if cfg.study.workers == "auto" else int(cfg.study.workers)
    if workers is not None and workers < 1:
        raise ConfigError(f"study.workers={cfg.study.workers}: must be auto or >= 1")
    workers, threads = default_parallelism(torch.cuda.is_available() and cfg.trainer.accelerator != "cpu",
                                           workers=workers)
    if cfg.study.threads != "auto":
        threads = int(cfg.study.threads)
    if threads < 1:
        raise ConfigError(f"study.threads={cfg.study.threads}: must be auto or >= 1")
    return workers, threads


def run_study(cfg: DictConfig) -> dict:
    from synthmed_lightning.study.report import write_report

    start = time.perf_counter()
    plan = build_plan(cfg)
    _check_real_data(plan.real_data)
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    _check_identity(out, {"profile": cfg.profile.name, "dataset": plan.real_data["name"],
                          "conditions": list(plan.conditions), "num_synthetic": plan.num_synthetic,
                          "overrides": plan.overrides})
    steps = plan.steps()
    workers, threads = _parallelism(cfg)
    log.info("Study in %s: %d steps, %d at a time with %d CPU thread(s) each", out, len(steps), workers, threads)

    def resume(step):  # a step killed before it finished continues from its last checkpoint
        interrupted = not step.done(out) and (step.run_dir(out) / "checkpoints" / "last.ckpt").is_file()
        return ["ckpt_path=last"] if interrupted and step.stage in TRAINING_STAGES else []

    timing_path = out / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    try:
        timing.update(run_steps(steps, out, workers, threads, resume))
    finally:
        write_json(timing_path, timing)
    timing["study_wall_s"] = timing.get("study_wall_s", 0.0) + (time.perf_counter() - start)
    write_json(timing_path, timing)
    results = write_report(cfg, plan, steps, timing)
    log.info("Results: %s and %s", out / "results.json", out / "report.md")
    return results
