"""stage=study: the synthetic-vs-real study end to end (`make reproduce-paper`, docs/design.md).

Plans the steps (`study/plan.py`), runs the unfinished ones as ordinary CLI runs side by side
(`study/runner.py`), then measures fidelity and writes `<out>/results.json` and `<out>/report.md`
(`study/report.py`). A rerun of the same command skips finished steps; a step that was killed
resumes from its last checkpoint.

A study folder is the study's own from its first step: `<out>/study.json` records every setting
that makes its results (each step's full command line), so a folder holding anything else, or a
study with other settings, is refused; a study may gain steps (more `study.seeds`,
`study.data_efficiency`) as long as the steps it has keep their command lines. `<out>/study.lock`
keeps a second study out while one runs (`study/lock.py`).
"""

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from synthmed_lightning.config import check_writable
from synthmed_lightning.data.readers import dataset_spec, read_dataset
from synthmed_lightning.data.transforms import check_augmentation
from synthmed_lightning.errors import ConfigError, DataError
from synthmed_lightning.study.efficiency import EXPORT as EFFICIENCY_EXPORT
from synthmed_lightning.study.efficiency import DataEfficiency
from synthmed_lightning.study.mia_splits import MiaSplits, split_steps, write_splits
from synthmed_lightning.study.lock import LOCK_NAME, study_lock
from synthmed_lightning.study.plan import CONDITIONS, COUNTED, TRAINING_STAGES, Step, StudyPlan, exports_of, setting_of
from synthmed_lightning.study.runner import default_parallelism, run_steps
from synthmed_lightning.utils import to_primitive, write_json

log = logging.getLogger(__name__)

# Command-line overrides passed on to every step (the study's own settings and hydra.* are not).
_FORWARDED = ("data", "paths", "trainer", "logger", "profile", "callbacks", "debug", "seed", "run_group")
# What must not change between a study and its resumption (else finished steps would not match),
# in the order differences are reported. `steps` holds every step's full command line, so any
# setting passed on to a step (profile.*, trainer.*, data.*, ablation overrides...) counts. Only
# the steps a study had before and has now are compared: a finished study may be extended with
# more steps (study.seeds, study.data_efficiency) without redoing the ones it has.
_IDENTITY_KEYS = ("profile", "dataset", "conditions", "num_synthetic", "overrides", "seed", "data", "steps")
# Step arguments that only say where results are logged or how progress shows (the `callbacks=`
# choice; `callbacks.*` settings still count): a resumption may change them.
_UNRELATED_TO_RESULTS = ("logger", "run_group", "callbacks")
# Files of a study folder that may exist before its identity file: the lock (taken before the
# identity is written) and what a crash inside write_json leaves.
_BEFORE_IDENTITY = {LOCK_NAME, "study.json.tmp"}
_MISSING = object()


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
    if counts and COUNTED not in exports_of(study.conditions):
        raise ConfigError(f"study.synthetic_counts={counts} sizes the {COUNTED} export: add {COUNTED} or "
                          f"real_plus_{COUNTED} to study.conditions (now {list(study.conditions)})")
    efficiency = DataEfficiency.from_config(study.get("data_efficiency"))
    if efficiency and EFFICIENCY_EXPORT not in exports_of(study.conditions):
        raise ConfigError(f"study.data_efficiency needs the {EFFICIENCY_EXPORT} export: add {EFFICIENCY_EXPORT} or "
                          f"real_plus_{EFFICIENCY_EXPORT} to study.conditions (now {list(study.conditions)})")
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
                     overrides={k: list(v) for k, v in (study.overrides or {}).items()},
                     seeds=extra_seeds(study.get("seeds"), cfg.seed), seed=int(cfg.seed), data_efficiency=efficiency,
                     synthetic_augmentation=check_augmentation(study.synthetic_augmentation, "study.synthetic_augmentation"))


def extra_seeds(seeds, seed: int) -> tuple[int, ...]:
    """`study.seeds` without the study's own `seed` (its steps are the study's own) and repeats."""
    seeds = list(seeds or [])
    if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 2**32 - 1 for s in seeds):
        raise ConfigError(f"study.seeds={seeds}: expected integers from 0 to {2**32 - 1}")
    return tuple(dict.fromkeys(s for s in seeds if s != seed))


def _segment_val_count(cfg: DictConfig, plan: StudyPlan) -> int:
    """How many training images the study's U-Nets hold out for validation: study.overrides.segment's
    data.val_count, else the command line's (checked already), else the profile's."""
    ablation = [a for a in plan.overrides.get("segment", []) if setting_of(a) == "data.val_count"]
    if ablation:
        value = ablation[-1].split("=", 1)[1]
        if not value.isdigit():
            raise ConfigError(f"study.overrides.segment: {ablation[-1]}: expected a whole number")
        return int(value)
    if any(setting_of(a) == "data.val_count" for a in plan.real_data_args):
        return int(cfg.data.val_count)
    return int(cfg.profile.segment.val_count)


def _check_efficiency_counts(cfg: DictConfig, plan: StudyPlan, train_images: int) -> None:
    """A k above the training images left after validation fails here, not hours later in its step."""
    if not plan.data_efficiency:
        return
    available = train_images - _segment_val_count(cfg, plan)
    if max(plan.data_efficiency.counts) > available:
        raise ConfigError(f"study.data_efficiency.counts={list(plan.data_efficiency.counts)}: at most {available} "
                          f"(the {train_images} training images of {plan.real_data['name']} minus "
                          f"{train_images - available} held out for validation)")


def _check_real_data(spec: dict) -> int:
    """A missing or mis-laid dataset fails here, in one line that says where to put it, before any
    step. Returns how many training images it has."""
    root = spec.get("root")
    if root and not Path(root).is_dir():
        raise DataError(f"data.root={root}: folder not found; put {spec['name'].upper()} there, or point "
                        f"make reproduce-paper DATA_ROOT=<folder holding {Path(root).name}/> (or data.root=<folder>)")
    return len(read_dataset(spec, "train"))


def study_identity(cfg: DictConfig, plan: StudyPlan, steps: list[Step]) -> dict:
    """What makes a study folder's results: its settings and every step's command line."""
    prefix = f"{plan.out}/"

    def relevant(argument: str) -> bool:
        key = argument.lstrip("+~").split("=", 1)[0]
        return key.split(".", 1)[0] not in _UNRELATED_TO_RESULTS or key.startswith("callbacks.")

    efficiency = plan.data_efficiency
    identity = {"profile": cfg.profile.name, "dataset": plan.real_data["name"], "conditions": list(plan.conditions),
                "num_synthetic": plan.num_synthetic, "overrides": plan.overrides, "seed": cfg.seed,
                "data": plan.real_data,
                # What this run adds (for the reader; only `steps` is compared, so these may grow).
                "seeds": list(plan.seeds), "data_efficiency": efficiency and asdict(efficiency),
                # Sorted: the order of overrides on a command line does not change a run; paths
                # relative to the folder, so a moved study folder still resumes.
                "steps": {s.name: sorted(a.replace(prefix, "<out>/") for a in s.arguments if relevant(a))
                          for s in steps}}
    return json.loads(json.dumps(identity))  # as study.json reads back (lists, not tuples)


def _shown(value) -> str:
    text = "not recorded" if value is _MISSING else str(value)
    return text if len(text) <= 120 else text[:117] + "..."  # the error stays one readable line


def _first_difference(key: str, there, now) -> str:
    """`key: <value> there, <value> now` for the first setting that differs, descending into dicts."""
    if isinstance(there, dict) and isinstance(now, dict):
        for sub in [*there, *(k for k in now if k not in there)]:
            if there.get(sub, _MISSING) != now.get(sub, _MISSING):
                return _first_difference(f"{key}.{sub}", there.get(sub, _MISSING), now.get(sub, _MISSING))
    # A step: name the first argument that differs, not two whole command lines.
    if key.startswith("steps.") and (there is _MISSING or now is _MISSING):
        return f"{key}: {'no such step' if there is _MISSING else 'a step'} there, " \
               f"{'no such step' if now is _MISSING else 'a step'} now"
    if key.startswith("steps.") and isinstance(there, list) and isinstance(now, list):
        gone, new = [a for a in there if a not in now], [a for a in now if a not in there]
        return f"{key}: {gone[0] if gone else 'nothing'} there, {new[0] if new else 'nothing'} now"
    return f"{key}: {_shown(there)} there, {_shown(now)} now"


def _check_identity(out: Path, identity: dict, record: bool = True) -> None:
    """Refuse a folder that is not this study's: an unrelated non-empty folder (its files would be
    overwritten, or taken for results), or a study made with other settings (its finished steps
    would not match). Else, with `record`, write the identity, before any step runs."""
    path = out / "study.json"
    if not path.is_file():
        others = sorted(p.name for p in out.iterdir() if p.name not in _BEFORE_IDENTITY)
        if others:
            raise ConfigError(f"study.out_dir={out} is not empty and holds no study (no study.json; found "
                              f"{', '.join(others[:3])}{', ...' if len(others) > 3 else ''}): use an empty or new folder")
    else:
        try:
            before = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise ConfigError(f"study.out_dir={out}: its study.json is unreadable ({error}); "
                              "use another out_dir") from None
        if not isinstance(before, dict):
            raise ConfigError(f"study.out_dir={out}: its study.json is not a study's identity; use another out_dir")
        for key in _IDENTITY_KEYS:
            there, now = before.get(key, _MISSING), identity.get(key, _MISSING)
            if key == "steps" and isinstance(there, dict) and isinstance(now, dict):
                # Steps added since (more seeds) or left out now are fine; a step in both must match.
                shared = [name for name in there if name in now]
                there, now = {n: there[n] for n in shared}, {n: now[n] for n in shared}
            if there != now:
                raise ConfigError(f"study.out_dir={out} holds a study with other settings "
                                  f"({_first_difference(key, there, now)}): use another out_dir")
        if isinstance(before.get("steps"), dict) and isinstance(identity.get("steps"), dict):
            # Every step the folder has ever held stays recorded, so one that returns must match too.
            identity = {**identity, "steps": {**before["steps"], **identity["steps"]}}
    if record:
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


def study_steps(plan: StudyPlan, splits: MiaSplits | None) -> list[Step]:
    """The plan's steps, then the repeated splits' trainings, exports and audits (`experiment=mia_splits`)."""
    return plan.steps() + (split_steps(plan, splits) if splits else [])


def run_study(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    plan = build_plan(cfg)
    _check_efficiency_counts(cfg, plan, _check_real_data(plan.real_data))
    out = plan.out
    splits = MiaSplits.from_config(cfg.study.get("mia_splits"))
    steps = study_steps(plan, splits)
    workers, threads = _parallelism(cfg)
    check_writable(out, "study.out_dir")  # a file in the way fails in one line, not in mkdir
    out.mkdir(parents=True, exist_ok=True)
    identity = study_identity(cfg, plan, steps)
    _check_identity(out, identity, record=False)  # an unrelated folder is refused before the lock is put in it
    with study_lock(out):
        _check_identity(out, identity)  # again: another study may have started here meanwhile
        if splits:  # the repeated splits' data folders, before any step reads them
            write_splits(out, plan.real_data, splits)
        return _run_locked(cfg, plan, steps, workers, threads, start)


def _run_locked(cfg: DictConfig, plan: StudyPlan, steps: list[Step], workers: int, threads: int, start: float) -> dict:
    from synthmed_lightning.study.report import STUDY_WALL, write_report

    out = plan.out
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
    timing[STUDY_WALL] = timing.get(STUDY_WALL, 0.0) + (time.perf_counter() - start)
    write_json(timing_path, timing)
    results = write_report(cfg, plan, steps, timing)
    log.info("Results: %s and %s", out / "results.json", out / "report.md")
    return results
