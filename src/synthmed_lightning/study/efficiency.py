"""Where synthetic data helps (`experiment=data_efficiency`, `study.data_efficiency`): U-Nets
trained on k real training images, each with and without the study's dual-GAN export, over a few
random draws of the k images; the share of synthetic patches is chosen on the validation images.

This module holds the settings, the names of the runs, and what the report makes of their
metrics.json files; the plan (`study/plan.py`) turns the runs into steps. It imports nothing of the
study's other modules, so both the plan and the report can use it.
"""

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from synthmed_lightning.errors import ConfigError

# The export a k-image group adds: the study's own generate_dual_gan step.
EXPORT = "dual_gan"
# The test metrics summarised over draws (and over seeds, study.seeds).
SUMMARY_METRICS = ("f1_vessel", "f1_macro", "auc", "specificity")
# How the share is chosen: the best validation F1 of the U-Net's run (segment's metrics.json).
VAL_METRIC = "val/best_f1_vessel"


def summarize(values: dict) -> dict:
    """{mean, std, n, values} of `values` ({label: number}); std is the sample std (ddof=1), None for n=1."""
    numbers = [v for v in values.values() if v is not None]
    return {"mean": statistics.fmean(numbers) if numbers else None,
            "std": statistics.stdev(numbers) if len(numbers) > 1 else None,
            "n": len(numbers), "values": {str(k): v for k, v in values.items() if v is not None}}


@dataclass(frozen=True)
class EfficiencyRun:
    """One U-Net of the data-efficiency curve: k real images (draw `draw`), plus the export at
    `share` of the training patches, or real images alone (share None)."""

    count: int
    draw: int
    share: float | None = None

    @property
    def name(self) -> str:
        kind = "real" if self.share is None else f"share{self.share:g}"
        return f"efficiency_k{self.count}_draw{self.draw}_{kind}"


@dataclass(frozen=True)
class DataEfficiency:
    """`study.data_efficiency`: the real-image counts k, how many random draws of the k images
    (`draws` for k <= `draws_up_to`, one above: large subsets overlap too much to differ), and the
    grid of synthetic shares tried for each draw."""

    counts: tuple[int, ...]
    draws: int = 3
    draws_up_to: int = 4
    shares: tuple[float, ...] = (0.1, 0.5)

    @classmethod
    def from_config(cls, node) -> "DataEfficiency | None":
        """The settings from the config node, checked; None when `counts` is empty (the default: off)."""
        if not node or not node.get("counts"):
            return None
        counts, shares = list(node["counts"]), list(node.get("shares") or [])
        draws, draws_up_to = node.get("draws", 3), node.get("draws_up_to", 4)
        if not all(_whole(k) and k >= 1 for k in counts) or len(set(counts)) != len(counts):
            raise ConfigError(f"study.data_efficiency.counts={counts}: expected distinct whole numbers >= 1")
        if not _whole(draws) or draws < 1:
            raise ConfigError(f"study.data_efficiency.draws={draws}: expected a whole number >= 1")
        if not _whole(draws_up_to):
            raise ConfigError(f"study.data_efficiency.draws_up_to={draws_up_to}: expected a whole number")
        if not shares or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 < s < 1 for s in shares) \
                or len(set(shares)) != len(shares):
            raise ConfigError(f"study.data_efficiency.shares={shares}: expected distinct numbers between 0 and 1")
        return cls(tuple(sorted(counts)), draws, draws_up_to, tuple(float(s) for s in shares))

    def draws_of(self, count: int) -> int:
        return self.draws if count <= self.draws_up_to else 1

    def runs(self) -> list[EfficiencyRun]:
        """Every U-Net, by k, then draw: the real-only one first, then one per share."""
        return [EfficiencyRun(k, d, share) for k in self.counts for d in range(self.draws_of(k))
                for share in (None, *self.shares)]

    def unet_count(self) -> int:
        return len(self.runs())


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _metrics(runs_dir: Path, run: EfficiencyRun) -> dict:
    path = runs_dir / run.name / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def choose_share(val_by_share: dict[float, float | None]) -> float | None:
    """The share with the best validation F1 (the smaller share on a tie); None if none has one."""
    scored = [(score, -share) for share, score in val_by_share.items() if score is not None and math.isfinite(score)]
    return -max(scored)[1] if scored else None


def efficiency_results(runs_dir: Path, settings: DataEfficiency) -> dict:
    """Per k (as a string key): the test metrics of the real-only U-Nets and of the U-Nets with
    the export at the share each draw chose on its validation images, summarised over draws, the
    shares chosen, and the gain in mean f1_vessel. Unfinished runs are left out."""
    results = {}
    for k in settings.counts:
        real, synthetic, chosen = {}, {}, {}
        for draw in range(settings.draws_of(k)):
            real_metrics = _metrics(runs_dir, EfficiencyRun(k, draw))
            if real_metrics:
                real[draw] = real_metrics
            with_export = {share: _metrics(runs_dir, EfficiencyRun(k, draw, share)) for share in settings.shares}
            share = choose_share({s: m.get(VAL_METRIC) for s, m in with_export.items() if m})
            if share is not None:
                chosen[draw], synthetic[draw] = share, with_export[share]
        entry = {"draws": settings.draws_of(k),
                 "real": {m: summarize({d: v.get(f"test/{m}") for d, v in real.items()}) for m in SUMMARY_METRICS},
                 "with_synthetic": {m: summarize({d: v.get(f"test/{m}") for d, v in synthetic.items()})
                                    for m in SUMMARY_METRICS},
                 "chosen_share": {str(d): s for d, s in chosen.items()}}
        real_mean, synthetic_mean = entry["real"]["f1_vessel"]["mean"], entry["with_synthetic"]["f1_vessel"]["mean"]
        entry["gain_f1_vessel"] = None if real_mean is None or synthetic_mean is None else synthetic_mean - real_mean
        results[str(k)] = entry
    return results


def _cell(summary: dict) -> str:
    if summary.get("mean") is None:
        return "–"
    spread = f" ± {summary['std']:.4f}" if summary.get("std") is not None else ""
    return f"{summary['mean']:.4f}{spread} ({summary['n']})"


def efficiency_markdown(results: dict, figure: str | None) -> list[str]:
    """The report's section: the table, what it means, and the plot."""
    lines = ["", "## Data efficiency: k real images, with and without the synthetic set", "",
             f"U-Nets trained on k of the real training images (random draws; the same validation images for "
             f"every k), alone and with the study's {EXPORT} export; the share of synthetic training patches "
             "is chosen per draw on the validation images, never on the test images. Test f1_vessel as "
             "mean ± sample std (draws).", "",
             f"**The {EXPORT} export's generators were trained on all the real training images**, not on the k a "
             "group would have: this measures what a synthetic set published by someone with more data adds, "
             "not what a group could make from its own k images.", "",
             "| k | real only | real + synthetic | gain | shares chosen |", "|---|---|---|---|---|"]
    for k, entry in sorted(results.items(), key=lambda kv: int(kv[0])):
        gain = entry.get("gain_f1_vessel")
        shares = ", ".join(f"{s:g}" for s in entry["chosen_share"].values()) or "–"
        lines.append(f"| {k} | {_cell(entry['real']['f1_vessel'])} | {_cell(entry['with_synthetic']['f1_vessel'])} | "
                     f"{'–' if gain is None else f'{gain:+.4f}'} | {shares} |")
    if figure:
        lines += ["", f"![data efficiency]({figure})"]
    return lines


def efficiency_plot(results: dict, path: Path) -> Path | None:
    """Mean test f1_vessel against k, with and without the export; error bars: std over draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 3.4), dpi=120)
    drawn = False
    for key, label, marker in (("real", "real only", "o-"), ("with_synthetic", f"real + {EXPORT}", "s-")):
        points = sorted((int(k), e[key]["f1_vessel"]) for k, e in results.items() if e[key]["f1_vessel"]["mean"] is not None)
        if points:
            drawn = True
            ax.errorbar([k for k, _ in points], [s["mean"] for _, s in points],
                        yerr=[s["std"] or 0.0 for _, s in points], fmt=marker, capsize=3, label=label)
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log", base=2)
    counts = sorted(int(k) for k in results)
    ax.set_xticks(counts, [str(k) for k in counts])  # k itself, not powers of two
    ax.minorticks_off()
    ax.set_xlabel("real training images k")
    ax.set_ylabel("test f1_vessel")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
