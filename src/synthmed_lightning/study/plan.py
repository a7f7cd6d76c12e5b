"""The steps of the synthetic-vs-real study (`make reproduce-paper`, `stage=study`) and what each
one runs: an ordinary `python -m synthmed_lightning stage=...` command with its run directory
under `<out>/runs/<step>` (exports under `<out>/synthetic/<condition>`).

A step is finished when its output is there, `metrics.json` for training and evaluation stages
(written last, atomically) or `manifest.json` for exports (the export is renamed into place only
when complete): a rerun skips it. A step killed half-way resumes from its `last.ckpt`.
"""

from dataclasses import dataclass, field
from pathlib import Path

# Conditions whose U-Net trains on a synthetic export (the others train on real data).
SYNTHETIC = {"dual_gan": ("train_mask", "train_image"), "single_gan": ("train_single",)}
CONDITIONS = ("real", "dual_gan", "single_gan", "real_plus_dual_gan")
TRAINING_STAGES = ("mask", "image", "single", "segment")


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

    def export_dir(self, condition: str, count: int | None = None) -> Path:
        suffix = "" if count in (None, self.num_synthetic) else f"_n{count}"
        return self.out / "synthetic" / f"{condition}{suffix}"

    def _step(self, name: str, stage: str, arguments: list[str], after=(), output="metrics.json") -> Step:
        run_dir = self.out / "runs" / name
        args = [f"stage={stage}", *self.common_args, *arguments, *self.overrides.get(stage, []),
                f"hydra.run.dir={_hydra_value(str(run_dir))}"]
        return Step(name, stage, tuple(args), tuple(after), output)

    def _segment_on_synthetic(self, name: str, export: Path, after: str) -> Step:
        return self._step(name, "segment", ["data=folder", f"data.root={_hydra_value(str(export))}",
                                            f"data.test={_hydra_value(self.real_data)}"], after=[after])

    def _generate(self, condition: str, count: int) -> Step:
        runs = self.out / "runs"
        if condition == "dual_gan":
            checkpoints = [f"mask_ckpt={_hydra_value(str(runs / 'train_mask/checkpoints/last.ckpt'))}",
                           f"image_ckpt={_hydra_value(str(runs / 'train_image/checkpoints/last.ckpt'))}"]
        else:
            checkpoints = [f"single_ckpt={_hydra_value(str(runs / 'train_single/checkpoints/last.ckpt'))}"]
        export = self.export_dir(condition, count)
        suffix = "" if count == self.num_synthetic else f"_n{count}"
        return self._step(f"generate_{condition}{suffix}", "generate",
                          [*checkpoints, f"num_samples={count}", f"out_dir={_hydra_value(str(export))}", "overwrite=true"],
                          after=SYNTHETIC[condition], output=str(export / "manifest.json"))

    def steps(self) -> list[Step]:
        """All steps, longest-running first within what can start (the scheduler keeps this order)."""
        wanted = set(self.conditions)
        needs = {gan for condition in wanted for gan in SYNTHETIC.get(condition.replace("real_plus_", ""), ())}
        steps = []
        if "train_single" in needs:
            steps.append(self._step("train_single", "single", self.real_data_args))
        if "train_mask" in needs:
            steps.append(self._step("train_mask", "mask", self.real_data_args))
        if "real" in wanted or self.audit:
            steps.append(self._step("segment_real", "segment", self.real_data_args))
        if "train_image" in needs:
            steps.append(self._step("train_image", "image", self.real_data_args))
        for condition in ("dual_gan", "single_gan"):
            if condition in wanted or (condition == "dual_gan" and "real_plus_dual_gan" in wanted):
                steps.append(self._generate(condition, self.num_synthetic))
        if "dual_gan" in wanted:
            steps.append(self._segment_on_synthetic("segment_dual_gan", self.export_dir("dual_gan"), "generate_dual_gan"))
        if "real_plus_dual_gan" in wanted:
            extra = {"name": "folder", "root": str(self.export_dir("dual_gan"))}
            steps.append(self._step("segment_real_plus_dual_gan", "segment",
                                    [*self.real_data_args, f"data.extra_train={_hydra_value([extra])}"],
                                    after=["generate_dual_gan"]))
        if "single_gan" in wanted:
            steps.append(self._segment_on_synthetic("segment_single_gan", self.export_dir("single_gan"),
                                                    "generate_single_gan"))
        for count in self.synthetic_counts:
            if count == self.num_synthetic:
                continue
            generate = self._generate("dual_gan", count)
            steps += [generate, self._segment_on_synthetic(f"segment_dual_gan_n{count}",
                                                           self.export_dir("dual_gan", count), generate.name)]
        if self.audit:
            for condition in ("dual_gan", "single_gan"):
                if any(s.name == f"generate_{condition}" for s in steps):
                    steps.append(self._audit(condition))
        return steps

    def _audit(self, condition: str) -> Step:
        checkpoint = self.out / "runs" / "segment_real" / "checkpoints" / "best.ckpt"
        return self._step(f"audit_{condition}", "audit",
                          [*self.real_data_args, f"synthetic_dir={_hydra_value(str(self.export_dir(condition)))}",
                           f"segment_ckpt={_hydra_value(str(checkpoint))}"],
                          after=[f"generate_{condition}", "segment_real"], output="audit.json")
