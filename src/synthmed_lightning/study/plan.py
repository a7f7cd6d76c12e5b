"""The steps of the synthetic-vs-real study (`make reproduce-paper`, `stage=study`) and what each
one runs: an ordinary `python -m synthmed_lightning stage=...` command with its run directory
under `<out>/runs/<step>` (exports under `<out>/synthetic/<condition>`).

With `study.seeds`, the generators, exports and U-Nets of every condition are repeated for each
extra seed s as steps named `<step>_s<s>` (exports under `<out>/synthetic/<condition>_s<s>`); audits
and count sweeps stay at the study's own seed. With `study.data_efficiency`, U-Nets on k real
training images, with and without the dual-GAN export, are added (`study/efficiency.py`).

A step is finished when its output is there, `metrics.json` for training and evaluation stages
(written last, atomically) or `manifest.json` for exports (the export is renamed into place only
when complete): a rerun skips it. A step killed half-way resumes from its `last.ckpt`.
"""

from dataclasses import dataclass, field
from pathlib import Path

from synthmed_lightning.study.efficiency import EXPORT as EFFICIENCY_EXPORT
from synthmed_lightning.study.efficiency import DataEfficiency, EfficiencyRun

# The conditions of the study: each trains one U-Net and tests it on the real test split.
# Everything else about a condition is derived from the two tables below (the plan's steps here,
# the report's tables, fidelity measures, audits and figures in study/report.py):
# * a condition named in SYNTHETIC trains on its own synthetic export, made by the generators of
#   the training runs listed there (in this order the report lists the exports);
# * `real_plus_<synthetic>` trains on the real training split plus that export (data.extra_train);
# * any other condition (`real`) trains on the real data alone.
# A synthetic export is measured (KL, Fréchet distance) and audited for privacy whenever some
# condition of the study trains on it.
# `stage2_real_masks` is Stage II painting the real training masks: between `real` and it lies the
# painter's cost, between it and `dual_gan` Stage I's.
SYNTHETIC = {"dual_gan": ("train_mask", "train_image"), "single_gan": ("train_single",),
             "stage2_real_masks": ("train_image",)}
CONDITIONS = ("real", "dual_gan", "single_gan", "real_plus_dual_gan", "stage2_real_masks")
# Exports that hold real training data (the real masks): they measure, they are never private.
HOLDS_REAL_DATA = ("stage2_real_masks",)
# Extra stage=generate settings of an export (the real-mask painting reads the real dataset too).
GENERATE_ARGS = {"stage2_real_masks": ("mask_source=real",)}
# How figures name each synthetic export.
EXPORT_LABELS = {"dual_gan": "dual GAN (Stage I + Stage II)", "single_gan": "single GAN",
                 "stage2_real_masks": "Stage II on the real training masks"}
REAL_PLUS = "real_plus_"
# The export that study.synthetic_counts makes again at other sizes (one U-Net each: F1 against count).
COUNTED = "dual_gan"
TRAINING_STAGES = ("mask", "image", "single", "segment")


def seed_suffix(seed: int | None) -> str:
    """What an extra seed's steps and exports add to their names (`_s43`); nothing for the study's seed."""
    return "" if seed is None else f"_s{seed}"


def setting_of(argument: str) -> str:
    """The setting a command-line override sets: `++seed=3` -> `seed`."""
    return argument.lstrip("+~").split("=", 1)[0]


def export_of(condition: str) -> str | None:
    """The synthetic export whose images `condition`'s U-Net trains on (None: real images only)."""
    synthetic = condition.removeprefix(REAL_PLUS)
    return synthetic if synthetic in SYNTHETIC else None


def exports_of(conditions) -> tuple[str, ...]:
    """The synthetic exports some of `conditions` train on, in SYNTHETIC's order."""
    needed = {export_of(condition) for condition in conditions}
    return tuple(synthetic for synthetic in SYNTHETIC if synthetic in needed)


@dataclass(frozen=True)
class Step:
    name: str
    stage: str
    arguments: tuple[str, ...]
    after: tuple[str, ...] = ()
    output: str = "metrics.json"  # relative to the run dir, or an absolute path

    def run_dir(self, out: Path) -> Path:
        return out / "runs" / self.name

    def output_path(self, out: Path) -> Path:
        return self.run_dir(out) / self.output

    def done(self, out: Path) -> bool:
        return self.output_path(out).is_file()


def _hydra_value(value) -> str:
    """A Python value as a Hydra override value (strings quoted, so paths with odd characters pass)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class StudyPlan:
    """Everything `build_steps` needs, taken from the composed `stage=study` config."""

    out: Path
    real_data: dict                    # {name, root, reader} of the real dataset (its test split is the test set)
    real_data_args: list[str]          # how to select the real dataset on a command line (data=..., data.*=...)
    common_args: list[str]             # profile, seed, trainer, logger, run group: passed to every step
    num_synthetic: int
    synthetic_counts: list[int] = field(default_factory=list)  # extra dual-GAN set sizes (F1-vs-count plot)
    conditions: tuple[str, ...] = CONDITIONS
    overrides: dict[str, list[str]] = field(default_factory=dict)  # per stage: extra overrides (ablations)
    audit: bool = True
    seeds: tuple[int, ...] = ()        # extra seeds to repeat the conditions over (the study's own seed excluded)
    seed: int | None = None            # the study's own seed (common_args carry it): for labels only
    data_efficiency: DataEfficiency | None = None  # U-Nets on k real images, with and without the export
    synthetic_augmentation: str = "strong"  # data.augmentation of the U-Nets that train on a synthetic export alone

    @property
    def exports(self) -> tuple[str, ...]:
        """The synthetic exports this study makes: those its conditions train on."""
        return exports_of(self.conditions)

    def export_dir(self, condition: str, count: int | None = None, seed: int | None = None) -> Path:
        suffix = "" if count in (None, self.num_synthetic) else f"_n{count}"
        return self.out / "synthetic" / f"{condition}{suffix}{seed_suffix(seed)}"

    def _step(self, name: str, stage: str, arguments: list[str], after=(), output="metrics.json",
              settings: dict | None = None) -> Step:
        """A step's command line. `settings` ({key: Python value}) are set exactly once, replacing any
        override of the same key from the command line or study.overrides (a step of an extra seed
        gets only its own `seed=`)."""
        run_dir = self.out / "runs" / name
        args = [f"stage={stage}", *self.common_args, *arguments, *self.overrides.get(stage, [])]
        if settings:
            args = [a for a in args if setting_of(a) not in settings]
            args += [f"{key}={_hydra_value(value)}" for key, value in settings.items()]
        args.append(f"hydra.run.dir={_hydra_value(str(run_dir))}")
        return Step(name, stage, tuple(args), tuple(after), output)

    def _segment_on_synthetic(self, name: str, export: Path, after: str, settings: dict | None = None) -> Step:
        """A U-Net on a synthetic export alone, tested on the real test images. It trains with
        `synthetic_augmentation`: a synthetic set meets real photographs it never saw, so it gets more
        photometric variety than a U-Net on real images (docs/experiments.md). With `default` the
        command line is the one before this setting existed, so older study folders stay valid."""
        if self.synthetic_augmentation != "default":
            settings = {**(settings or {}), "data.augmentation": self.synthetic_augmentation}
        return self._step(name, "segment", ["data=folder", f"data.root={_hydra_value(str(export))}",
                                            f"data.test={_hydra_value(self.real_data)}"], after=[after],
                          settings=settings)

    def _generate(self, condition: str, count: int, seed: int | None = None) -> Step:
        runs, tag = self.out / "runs", seed_suffix(seed)
        # train_<stage> hands its generator to stage=generate as <stage>_ckpt=...
        checkpoints = [f"{run.removeprefix('train_')}_ckpt={_hydra_value(str(runs / (run + tag) / 'checkpoints/last.ckpt'))}"
                       for run in SYNTHETIC[condition]]
        if condition in GENERATE_ARGS:
            checkpoints += [*GENERATE_ARGS[condition], *self.real_data_args]
        export = self.export_dir(condition, count, seed)
        suffix = "" if count == self.num_synthetic else f"_n{count}"
        return self._step(f"generate_{condition}{suffix}{tag}", "generate",
                          [*checkpoints, f"num_samples={count}", f"out_dir={_hydra_value(str(export))}", "overwrite=true"],
                          after=[run + tag for run in SYNTHETIC[condition]], output=str(export / "manifest.json"),
                          settings=_seed_setting(seed))

    def steps(self) -> list[Step]:
        """All steps, longest-running first within what can start (the scheduler keeps this order)."""
        steps = self._condition_steps()
        for seed in self.seeds:
            steps += self._condition_steps(seed)
        if self.data_efficiency:
            steps += [self._efficiency_step(run) for run in self.data_efficiency.runs()]
        for count in self.synthetic_counts:
            if count == self.num_synthetic:
                continue
            generate = self._generate(COUNTED, count)
            steps += [generate, self._segment_on_synthetic(f"segment_{COUNTED}_n{count}",
                                                           self.export_dir(COUNTED, count), generate.name)]
        if self.audit:
            steps += [self._audit(synthetic) for synthetic in self.exports]
        return steps

    def _condition_steps(self, seed: int | None = None) -> list[Step]:
        """The generators, exports and U-Nets of every condition, at the study's seed (None) or another."""
        wanted, tag, settings = set(self.conditions), seed_suffix(seed), _seed_setting(seed)
        needs = {gan for synthetic in self.exports for gan in SYNTHETIC[synthetic]}
        steps = []
        if "train_single" in needs:
            steps.append(self._step(f"train_single{tag}", "single", self.real_data_args, settings=settings))
        if "train_mask" in needs:
            steps.append(self._step(f"train_mask{tag}", "mask", self.real_data_args, settings=settings))
        # The audits (study's seed only) need the real-data U-Net even when `real` is no condition.
        if "real" in wanted or (self.audit and seed is None):
            steps.append(self._step(f"segment_real{tag}", "segment", self.real_data_args, settings=settings))
        if "train_image" in needs:
            steps.append(self._step(f"train_image{tag}", "image", self.real_data_args, settings=settings))
        for synthetic in self.exports:
            steps.append(self._generate(synthetic, self.num_synthetic, seed))
        for synthetic in self.exports:
            export = self.export_dir(synthetic, seed=seed)
            if synthetic in wanted:
                steps.append(self._segment_on_synthetic(f"segment_{synthetic}{tag}", export,
                                                        f"generate_{synthetic}{tag}", settings))
            if REAL_PLUS + synthetic in wanted:
                extra = {"name": "folder", "root": str(export)}
                steps.append(self._step(f"segment_{REAL_PLUS}{synthetic}{tag}", "segment",
                                        [*self.real_data_args, f"data.extra_train={_hydra_value([extra])}"],
                                        after=[f"generate_{synthetic}{tag}"], settings=settings))
        return steps

    def _efficiency_step(self, run: EfficiencyRun) -> Step:
        """A U-Net on k real training images (draw `run.draw`), with the dual-GAN export at `run.share`
        of the patches or without it. The held-out validation images are the same for every k."""
        settings = {"data.train_count": run.count, "data.train_draw": run.draw}
        after = ()
        if run.share is not None:
            extra = {"name": "folder", "root": str(self.export_dir(EFFICIENCY_EXPORT))}
            settings.update({"data.extra_train": [extra], "data.extra_train_share": run.share})
            after = (f"generate_{EFFICIENCY_EXPORT}",)
        return self._step(run.name, "segment", self.real_data_args, after=after, settings=settings)

    def _audit(self, condition: str) -> Step:
        checkpoint = self.out / "runs" / "segment_real" / "checkpoints" / "best.ckpt"
        return self._step(f"audit_{condition}", "audit",
                          [*self.real_data_args, f"synthetic_dir={_hydra_value(str(self.export_dir(condition)))}",
                           f"segment_ckpt={_hydra_value(str(checkpoint))}"],
                          after=[f"generate_{condition}", "segment_real"], output="audit.json")


def _seed_setting(seed: int | None) -> dict | None:
    """The setting that makes a step run at an extra seed; None keeps the study's own (common_args)."""
    return None if seed is None else {"seed": seed}
