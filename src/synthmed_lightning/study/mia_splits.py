"""Membership inference over repeated splits (`experiment=mia_splits`, `study.mia_splits`).

One audit compares 20 members with 20 other patients: its AUC is uncertain by about +-0.18, and
partly measures how the two groups differ rather than what the generators kept. Here Stage I and
Stage II are trained `runs` times, each time on a random half of the labelled images (the `pool`),
so that every image is a member in half the runs and held out in the other half. Each run's export
is audited against its own split (members: its half; held out: the other half); every image's
membership score is then compared with the same image's scores in the runs it was out of
(`metrics.privacy.repeated_split_attack`), which takes out how typical the image is.

Splits come in complementary pairs: run 2p trains on a random half, run 2p+1 on the rest, so every
image is a member in exactly runs/2 runs and every run has half the pool. Each split is written as
a `data=folder` dataset, `<out>/mia_splits/split<k>/{train,test}/` (copies of the real images:
never publish them), that every stage reads as it reads any dataset.

Cost: `runs` x (Stage I + Stage II + an export + an audit). On this project's 2-core CPU at the
quick profile (the DRIVE study's steps: Stage I 21 min, Stage II 11 min, 200 exported images 6 min,
an audit about 4 min) that is about 42 min a run, 5.6 h for 8 runs, plus the real-data U-Net whose
encoder the audits use (24 min); on a GPU, minutes a run.

This module holds the settings, the split design, the folders, the steps (built with the plan's
own step builder) and what the report makes of the audits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.export import MANIFEST, DatasetWriter
from synthmed_lightning.metrics.privacy import BOOTSTRAP_DRAWS, repeated_split_attack
from synthmed_lightning.study.plan import Step, StudyPlan, _hydra_value

POOLS = ("all", "train")  # the labelled images split: both of the dataset's splits, or its train split only
FOLDER = "mia_splits"


@dataclass(frozen=True)
class MiaSplits:
    """`study.mia_splits`: `runs` trainings (an even number >= 4) on random halves of `pool`, drawn with `seed`."""

    runs: int = 8
    pool: str = "all"
    seed: int = 0

    @classmethod
    def from_config(cls, node) -> MiaSplits | None:
        """The settings, checked; None when the node is absent or `runs` is 0 (off)."""
        if not node or not node.get("runs"):
            return None
        runs, pool, seed = node.get("runs"), node.get("pool", "all"), node.get("seed", 0)
        if not isinstance(runs, int) or isinstance(runs, bool) or runs < 4 or runs % 2:
            raise ConfigError(f"study.mia_splits.runs={runs}: expected an even number >= 4 (complementary pairs; "
                              "each image must be held out in at least two runs)")
        if pool not in POOLS:
            raise ConfigError(f"study.mia_splits.pool={pool}: expected one of {', '.join(POOLS)}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"study.mia_splits.seed={seed}: expected a whole number >= 0")
        return cls(runs, pool, seed)

    def membership(self, images: int) -> np.ndarray:
        """(images, runs) bool: which images each run trains on. Complementary pairs of random halves."""
        if images < 4:
            raise ConfigError(f"study.mia_splits: the pool holds {images} labelled images, at least 4 are needed")
        members = np.zeros((images, self.runs), dtype=bool)
        rng = np.random.default_rng(self.seed)
        for pair in range(self.runs // 2):
            members[rng.permutation(images)[: images // 2], 2 * pair] = True
            members[:, 2 * pair + 1] = ~members[:, 2 * pair]
        return members


def run_tag(k: int) -> str:
    return f"_split{k}"


def split_dir(out: Path, k: int) -> Path:
    return out / FOLDER / f"split{k}"


def write_splits(out: Path, real: dict, splits: MiaSplits) -> list[Path]:
    """The split folders (`train/`: run k's members, `test/`: the rest), written once each as exports
    (atomic, with a manifest); a folder whose manifests list exactly the right images is kept."""
    pool = read_dataset(real, splits.pool)
    members = splits.membership(len(pool))
    folders = []
    for k in range(splits.runs):
        folder = split_dir(out, k)
        for part, chosen in (("train", members[:, k]), ("test", ~members[:, k])):
            samples = [s for s, keep in zip(pool, chosen) if keep]
            if _listed_stems(folder / part) != sorted(s.stem for s in samples):
                with DatasetWriter(folder / part, overwrite=True) as writer:
                    for sample in samples:
                        writer.add(sample.stem, sample.image, sample.mask, sample.fov)
                    writer.commit({"mia_split": k, "part": part, "pool": splits.pool, "seed": splits.seed})
        folders.append(folder)
    return folders


def _listed_stems(folder: Path) -> list[str] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    files = json.loads(path.read_text()).get("files", {})
    return sorted(Path(name).stem for name in files if name.startswith("images/"))


def split_steps(plan: StudyPlan, splits: MiaSplits) -> list[Step]:
    """Per run: Stage I and Stage II on the split, the dual-GAN export, and its audit against the split
    (the feature space from the study's `segment_real` U-Net, the same encoder for every run)."""
    encoder = plan.out / "runs" / "segment_real" / "checkpoints" / "best.ckpt"
    steps = []
    for k in range(splits.runs):
        tag, data = run_tag(k), ["data=folder", f"data.root={_hydra_value(str(split_dir(plan.out, k)))}"]
        export = plan.out / "synthetic" / f"dual_gan{tag}"
        runs = {stage: plan.out / "runs" / f"train_{stage}{tag}" for stage in ("mask", "image")}
        steps += [plan._step(f"train_{stage}{tag}", stage, data) for stage in runs]
        steps.append(plan._step(
            f"generate_dual_gan{tag}", "generate",
            [*(f"{stage}_ckpt={_hydra_value(str(run / 'checkpoints' / 'last.ckpt'))}" for stage, run in runs.items()),
             f"num_samples={plan.num_synthetic}", f"out_dir={_hydra_value(str(export))}", "overwrite=true"],
            after=[f"train_{stage}{tag}" for stage in runs], output=str(export / MANIFEST)))
        steps.append(plan._step(f"audit{tag}", "audit",
                                [*data, f"synthetic_dir={_hydra_value(str(export))}",
                                 f"segment_ckpt={_hydra_value(str(encoder))}"],
                                after=[f"generate_dual_gan{tag}", "segment_real"], output="audit.json"))
    return steps


def split_scores(out: Path, splits: MiaSplits, space: str, attack: str = "calibrated") -> tuple[list[str], np.ndarray, np.ndarray]:
    """(image stems, scores (images, finished runs), members (images, finished runs)) from the runs'
    audit.json files, each image in the same row in every run."""
    columns, stems = [], None
    for k in range(splits.runs):
        path = out / "runs" / f"audit{run_tag(k)}" / "audit.json"
        if not path.is_file():
            continue
        scores = json.loads(path.read_text())["real_scores"]
        if space not in scores:
            continue
        by_stem = {stem: (value, member) for stem, value, member in zip(scores["stems"], scores[space][attack],
                                                                        scores["member"])}
        stems = stems or sorted(by_stem)
        columns.append([by_stem[stem] for stem in stems])
    if not columns:
        return [], np.zeros((0, 0)), np.zeros((0, 0), dtype=bool)
    table = np.array(columns, dtype=object).transpose(1, 0, 2)  # (images, runs, [score, member])
    return stems, table[..., 0].astype(np.float64), table[..., 1].astype(bool)


def mia_splits_results(out: Path, splits: MiaSplits, draws: int = BOOTSTRAP_DRAWS) -> dict:
    """Per space and attack (raw, calibrated): `repeated_split_attack` over the finished runs, once
    every image has been a member in one of them and held out in two; else just the count."""
    results = {"runs": splits.runs, "pool": splits.pool}
    for space in ("pixel", "feature"):
        for attack in ("raw", "calibrated"):
            stems, scores, members = split_scores(out, splits, space, attack)
            results["finished"] = max(results.get("finished", 0), scores.shape[1] if scores.size else 0)
            if scores.size and members.sum(axis=1).min() >= 1 and (~members).sum(axis=1).min() >= 2:
                results.setdefault(space, {})[attack] = repeated_split_attack(scores, members, draws)
    return results
