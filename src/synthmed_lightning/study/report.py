"""The study's results: `<out>/results.json`, `<out>/report.md` beside the paper's figures,
figures under `<out>/figures/`, and the same to W&B with `logger=wandb` (docs/design.md).

Everything is read back from the steps' outputs (metrics.json, exports, predictions), so the
report can be rebuilt at any time from a finished study folder. Which conditions there are, and
which synthetic exports they train on, comes from the plan (`study/plan.py`): a new condition
needs no change here.
"""

import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
from omegaconf import DictConfig, OmegaConf

from synthmed_lightning.data.readers import read_dataset
from synthmed_lightning.metrics.segmentation import METRIC_NAMES
from synthmed_lightning.study.efficiency import (SUMMARY_METRICS, efficiency_markdown, efficiency_plot,
                                                efficiency_results, summarize)
from synthmed_lightning.study.fidelity import feature_distances_to_real, kl_to_real, painter_fidelity
from synthmed_lightning.study.mia_splits import MiaSplits, mia_splits_results
from synthmed_lightning.study.plan import (COUNTED, EXPORT_LABELS, HOLDS_REAL_DATA, SYNTHETIC, StudyPlan, Step,
                                           seed_suffix)
from synthmed_lightning.study.runner import CODE_RECORD
from synthmed_lightning.utils import write_json
from synthmed_lightning.visualize import image_grid, overlay_legend, save_png

log = logging.getLogger(__name__)

# Guibas, Virdi & Li (2017), DRIVE test: U-Net F1 trained on synthetic vs real pairs; KL to real.
PAPER = {"f1": {"dual_gan": 0.8877, "real": 0.8988}, "kl": {"dual_gan": 4.759, "real_subset": 4.212e-4}}
# results.json's `ratio_dual_over_real`: f1_vessel of the first condition over the second's (paper: 0.988).
RATIO = ("ratio_dual_over_real", "dual_gan", "real")
# Where the synthetic data's cost comes from: each pair (from, to) of conditions differs by one stage.
DECOMPOSITION = (("Stage II (the painter)", "real", "stage2_real_masks"),
                 ("Stage I (the masks)", "stage2_real_masks", "dual_gan"))
_TILE_HEIGHT = 160
# Stage I statistics that count things (components, junctions, skeleton pixels): shown as counts, not metrics.
_COUNTS = ("components", "branch_points", "end_points", "skeleton_length")
# timing_s's whole-study entry (stages/study.py): shown as one line, not as a step.
STUDY_WALL = "study_wall_s"  # timing.json: the study's own wall seconds, summed over its runs
# What results.json keeps of each audit.json (the rest, e.g. the worst cases, stays in the audit's run).
_PRIVACY_KEYS = ("near_copies", "mia_auc", "mia_auc_calibrated", "feature_encoder", "spaces", "synthetic_count",
                 "train_count", "holdout_count", "real_data_source", "positive_controls_detected")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def dp_guarantees(out: Path) -> dict:
    """Per synthetic condition whose generators trained with privacy=dp: each one's (epsilon, delta)
    and the export's total, their sum (basic composition: every stage reads the same images)."""
    guarantees = {}
    for condition, runs in SYNTHETIC.items():
        spent = {run: _read_json(out / "runs" / run / "metrics.json") for run in runs}
        spent = {run: {"epsilon": m["privacy/epsilon"], "delta": m["privacy/delta"]}
                 for run, m in spent.items() if "privacy/epsilon" in m}
        if spent:
            # A stage without DP, or real data in the export, leaves the export without a guarantee.
            private = len(spent) == len(runs) and condition not in HOLDS_REAL_DATA
            totals = {f"{key}_total": sum(v[key] for v in spent.values()) if private else None
                      for key in ("epsilon", "delta")}
            guarantees[condition] = {**spent, **totals}
    return guarantees


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None without either or with a zero denominator (a zero numerator is a ratio of 0)."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def segmentation_results(out: Path, names: list[str]) -> dict[str, dict[str, float]]:
    results = {}
    for name in names:
        metrics = _read_json(out / "runs" / f"segment_{name}" / "metrics.json")
        results[name] = {k: metrics[f"test/{k}"] for k in METRIC_NAMES if f"test/{k}" in metrics}
    return results


def augmentation_used(out: Path, names: list[str]) -> dict[str, str]:
    """{condition: the `data.augmentation` its U-Net trained with}, read from the run's own
    `.hydra/config.yaml` (what ran, not what the plan would run); runs without one are left out."""
    used = {}
    for name in names:
        config = out / "runs" / f"segment_{name}" / ".hydra" / "config.yaml"
        if config.is_file():
            used[name] = str(OmegaConf.load(config).get("data", {}).get("augmentation", "default"))
    return used


def seed_results(out: Path, names: list[str], seed: int | None, seeds: tuple[int, ...]) -> dict:
    """Over the study's seed and the extra `seeds` (study.seeds): per condition and test metric,
    {mean, std, n, values by seed}, and the ratio of the dual-GAN and real f1_vessel means. The
    study's own seed is read from `segment_<name>`, another seed s from `segment_<name>_s<s>`;
    unfinished runs are left out."""
    # {label in results.json: the seed whose suffix names its runs (None: the study's own, no suffix)}
    labelled = {"base" if seed is None else seed: None, **{s: s for s in seeds}}
    conditions = {}
    for name in names:
        metrics = {label: _read_json(out / "runs" / f"segment_{name}{seed_suffix(s)}" / "metrics.json")
                   for label, s in labelled.items()}
        conditions[name] = {m: summarize({label: v.get(f"test/{m}") for label, v in metrics.items()})
                            for m in SUMMARY_METRICS}
    summary = {"seeds": list(labelled), "conditions": conditions}
    key, numerator, denominator = RATIO
    ratio = _ratio(*(conditions.get(c, {}).get("f1_vessel", {}).get("mean") for c in (numerator, denominator)))
    if ratio is not None:
        summary[key] = ratio
    return summary


def _folder(path: Path):
    return read_dataset({"name": "folder", "root": str(path)}, "train")


def finished_exports(plan: StudyPlan) -> list[str]:
    """The synthetic exports of the plan that are complete (their manifest is written last): the
    sets that are shown, measured (KL, Fréchet), audited and logged. The one place that decides it."""
    return [c for c in plan.exports if (plan.export_dir(c) / "manifest.json").is_file()]


def read_exports(plan: StudyPlan) -> dict[str, list]:
    """{condition: samples} of every finished synthetic export, read once for all figures and measures."""
    return {c: _folder(plan.export_dir(c)) for c in finished_exports(plan)}


def fidelity(plan: StudyPlan, real: list, exports: dict[str, list], tiles_per_image: int) -> dict:
    """KL, Fréchet and kernel (KID) distances of every synthetic export to the real training images."""
    test = read_dataset(plan.real_data, "test")
    out = {"kl": kl_to_real(real, exports, test)}
    checkpoint = plan.out / "runs" / "segment_real" / "checkpoints" / "best.ckpt"
    if checkpoint.is_file():
        out.update(feature_distances_to_real(str(checkpoint), real, exports, test, tiles_per_image))
    return out


def _tile(image: np.ndarray) -> np.ndarray:
    """An (H, W[, 3]) uint8 picture scaled to the grid's tile height, as RGB."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    scale = _TILE_HEIGHT / image.shape[0]
    return cv2.resize(image, (max(1, round(image.shape[1] * scale)), _TILE_HEIGHT), interpolation=cv2.INTER_AREA)


def _labelled_row(label: str, tiles: list[np.ndarray]) -> np.ndarray:
    row = np.concatenate(tiles, axis=1)
    banner = np.full((24, row.shape[1], 3), 255, np.uint8)
    cv2.putText(banner, label, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([banner, row], axis=0)


def samples_figure(real: list | None, exports: dict[str, list], path: Path, per_row: int = 3) -> Path | None:
    """Rows real | dual GAN | single GAN, each item as image + mask (the report's grid). Without the
    real row (`real=None`) the figure holds synthetic data only, so it may be published where the
    real data's licence forbids copies (DRIVE's does: the README shows that version)."""
    rows = {"real (training data)": real[:per_row]} if real is not None else {}
    rows.update({EXPORT_LABELS.get(c, c): samples[:per_row] for c, samples in exports.items()})
    drawn = [_labelled_row(label, [t for s in samples for t in (_tile(s.image), _tile(s.mask * 255))])
             for label, samples in rows.items() if samples]
    if not drawn:
        return None
    width = max(r.shape[1] for r in drawn)
    drawn = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in drawn]
    save_png(path, np.concatenate(drawn, axis=0))
    return path


def overlays_figure(out: Path, names: list[str], path: Path) -> Path | None:
    """The first test image's prediction overlay of each condition, side by side."""
    tiles = []
    for name in names:
        found = sorted((out / "runs" / f"segment_{name}" / "predictions").glob("*_overlay.png"))
        if found:
            image = cv2.cvtColor(cv2.imread(str(found[0])), cv2.COLOR_BGR2RGB)
            tiles.append(_labelled_row(name, [_tile(image)]))
    if not tiles:
        return None
    grid, legend = image_grid(tiles, columns=len(tiles)), overlay_legend()
    width = max(grid.shape[1], legend.shape[1])
    save_png(path, np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=255)
                                   for a in (grid, legend)]))
    return path


def count_plot(counts: dict[int, float], path: Path) -> Path:
    """F1 of the dual-GAN U-Net against the number of synthetic training pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(counts)
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=120)
    ax.plot(xs, [counts[x] for x in xs], "o-")
    ax.set_xscale("log")
    ax.set_xlabel("synthetic training pairs (dual GAN)")
    ax.set_ylabel("test f1_vessel")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def decomposition(seg: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per stage, the f1_vessel, specificity and AUC lost between the two conditions that differ by it."""
    costs = {}
    for stage, before, after in DECOMPOSITION:
        if before in seg and after in seg:
            costs[stage] = {f"{key}_cost": seg[before][key] - seg[after][key] for key in ("f1_vessel", "specificity", "auc")
                            if key in seg[before] and key in seg[after]}
    return costs


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def _count(value) -> str:
    """An integer as it is, a mean of counts with one decimal."""
    if isinstance(value, int) or value is None:
        return _fmt(value)
    return f"{value:.1f}" if math.isfinite(value) else "–"


def _stat(key: str, value) -> str:
    return _count(value) if key in _COUNTS else _fmt(value)


def _comparable(results: dict) -> bool:
    """Whether the paper's figures (DRIVE, full training) may stand beside the results."""
    return results["profile"] != "smoke" and results["dataset"] == "DRIVE"


def _not_comparable_line(results: dict) -> list[str]:
    """One line at the top of the results when they are not comparable with the paper (else none)."""
    if _comparable(results):
        return []
    if results["profile"] == "smoke":
        why = (f"profile `smoke` on {results['dataset']} only checks that the pipeline runs; "
               "its numbers say nothing about the method")
    else:
        why = f"these are {results['dataset']} results, the paper's are DRIVE's"
    paper = ", ".join(f"{name} {f1:.4f}" for name, f1 in PAPER["f1"].items())
    return [f"**Not comparable with the paper:** {why} (paper, DRIVE test F1: {paper}; ratio 0.988).", ""]


def _spread(summary: dict | None) -> str:
    """`mean ± std (n)` of a summary over seeds (`–` without a value)."""
    if not summary or summary.get("mean") is None:
        return "–"
    std = f" ± {_fmt(summary['std'])}" if summary.get("std") is not None else ""
    return f"{_fmt(summary['mean'])}{std} ({summary['n']})"


def _seeded_table(results: dict) -> list[str]:
    """The main table over seeds: mean ± sample std (n) of each condition, then each seed's f1_vessel."""
    seeds, paper = results["seeds"], _comparable(results)
    lines = [f"Mean ± sample std over seeds (n runs) {', '.join(map(str, seeds['seeds']))}; the sections below "
             "use the study's own seed.", "",
             "| condition | f1_vessel | f1_macro | AUC | specificity |" + (" paper F1 |" if paper else ""),
             "|---|---|---|---|---|" + ("---|" if paper else "")]
    for name, values in seeds["conditions"].items():
        lines.append(f"| {name} | {' | '.join(_spread(values.get(m)) for m in SUMMARY_METRICS)} |"
                     + (f" {_fmt(PAPER['f1'].get(name))} |" if paper else ""))
    if results.get("observer"):
        o = results["observer"]
        lines.append(f"| 2nd human observer | {_fmt(o.get('f1_vessel'))} | {_fmt(o.get('f1_macro'))} | – | "
                     f"{_fmt(o.get('specificity'))} |" + (" – |" if paper else ""))
    lines += ["", "f1_vessel per seed:", "", "| condition | " + " | ".join(map(str, seeds["seeds"])) + " |",
              "|---|" + "---|" * len(seeds["seeds"])]
    for name, values in seeds["conditions"].items():
        per_seed = values["f1_vessel"]["values"]
        lines.append(f"| {name} | " + " | ".join(_fmt(per_seed.get(str(s))) for s in seeds["seeds"]) + " |")
    if seeds.get("ratio_dual_over_real") is not None:
        alone = results.get("ratio_dual_over_real")
        alone = "–" if alone is None else f"{alone:.3f}"
        lines += ["", f"Ratio dual GAN / real, f1_vessel means: **{seeds['ratio_dual_over_real']:.3f}** "
                  f"(study's seed alone: {alone}{'; paper: 0.988' if paper else ''})."]
    return lines


def privacy_results(out: Path, exports) -> dict:
    """{export: what results.json keeps of its audit} for the exports whose `audit_<export>` step finished."""
    audits = {c: _read_json(out / "runs" / f"audit_{c}" / "audit.json") for c in exports}
    return {c: {k: a[k] for k in _PRIVACY_KEYS if k in a} for c, a in audits.items() if a}


def _auc(attack: dict | None) -> str:
    """`AUC [low, high]` of a membership attack (`–` without one)."""
    if not attack or attack.get("auc") is None:
        return "–"
    low, high = attack.get("auc_ci95") or (None, None)
    return f"{attack['auc']:.3f}" + (f" [{low:.2f}, {high:.2f}]" if low is not None else "")


def _tpr(attack: dict | None) -> str:
    rates = (attack or {}).get("tpr_at_fpr") or {}
    return " / ".join(f"{v:.2f}" for v in rates.values()) or "–"


def _positive_controls(controls: list[dict] | None) -> str:
    """`1%: yes (2/2 flagged)` per positive control: detected, and how many planted copies were near copies."""
    return "; ".join(f"{c['fraction']:.0%}: {'yes' if c['detected'] else '**no**'} "
                     f"({c['planted_flagged']}/{c['planted']} flagged)" for c in controls or []) or "–"


def privacy_markdown(privacy: dict, splits: dict | None = None) -> list[str]:
    """The report's privacy section: per export and space, near copies against the held-out images'
    false alarms, the raw and calibrated membership attacks (AUC with its 95 % interval, TPR at low
    FPR) and the controls' readings; DP guarantees; the repeated-split analysis (docs/privacy.md)."""
    lines = ["", "## Privacy audit"]
    if privacy:  # a study of repeated splits alone audits no export of its own
        lines += _exports_privacy_markdown(privacy)
    if splits:
        lines += _splits_markdown(splits)
    return lines


def _exports_privacy_markdown(privacy: dict) -> list[str]:
    """The per-export rows of the privacy section, with the feature encoder and the DP guarantees."""
    lines = ["",
             "Per export and feature space (docs/privacy.md): near copies among the synthetic images, beside the "
             "held-out real images that pass the same test (false alarms); the membership attack's AUC with its "
             "bootstrap 95 % interval, raw (distance to the nearest synthetic image) and calibrated (relative to "
             "the image's nearest real neighbour), and the calibrated attack's true-positive rate at 1 % / 10 % "
             "false positives; the negative control (held-out images standing in for the export: no member) and "
             "whether the export's calibrated AUC lies within its interval; the positive controls (the export "
             "with 1 / 5 / 20 % of it replaced by perturbed training images): detected, and how many of the "
             "planted copies were near copies.", "",
             "| export | space | near copies | held-out false alarms | AUC raw | AUC calibrated | TPR 1 % / 10 % | "
             "negative control | export vs negative | positive controls |", "|---|---|---|---|---|---|---|---|---|---|"]
    for export, audit in privacy.items():
        for space, r in (audit.get("spaces") or {}).items():
            negative = r.get("negative_control") or {}
            lines.append(f"| {export} | {space} | {r.get('near_copies', '–')} of {audit.get('synthetic_count', '–')} | "
                         f"{r.get('holdout_near_copies', '–')} of {audit.get('holdout_count', '–')} | "
                         f"{_auc(r.get('raw') or {'auc': r.get('mia_auc'), 'auc_ci95': r.get('mia_auc_ci95')})} | "
                         f"{_auc(r.get('calibrated'))} | {_tpr(r.get('calibrated'))} | {_auc(negative.get('calibrated'))} | "
                         f"{r.get('calibrated_vs_negative', '–')} | {_positive_controls(r.get('positive_controls'))} |")
    encoders = {audit["feature_encoder"] for audit in privacy.values() if audit.get("feature_encoder")}
    lines += ["", *(f"Feature space: {e}." for e in sorted(encoders))] if encoders else []
    guarantees = {export: audit["dp"] for export, audit in privacy.items() if audit.get("dp")}
    if guarantees:
        lines += ["", "| export | DP epsilon (total) | delta (total) |", "|---|---|---|"]
        lines += [f"| {export} | {_fmt(g.get('epsilon_total'))} | {_fmt(g.get('delta_total'))} |"
                  for export, g in guarantees.items()]
        lines += ["", "`–`: no guarantee for the export as a whole (a stage without DP, or real data in it)."]
    return lines


def _splits_markdown(splits: dict) -> list[str]:
    """The repeated-split analysis (`experiment=mia_splits`): per space and attack, the pooled and the
    self-compared AUC, and each image's mean score gap between its member and held-out runs."""
    lines = ["", f"### Repeated splits ({splits.get('finished', 0)} of {splits['runs']} runs finished, pool "
             f"`{splits['pool']}`)", "",
             "Each image is a member in half the runs; `self` compares its scores with its own scores in the runs "
             "it was held out of, `pooled` is the ordinary attack over all runs.", "",
             "| space | attack | AUC pooled | AUC self | TPR 1 % / 10 % (self) | mean gap [95 %] | images scoring higher as members |",
             "|---|---|---|---|---|---|---|"]
    for space in ("pixel", "feature"):
        for attack, r in (splits.get(space) or {}).items():
            gap = r["gap"]
            lines.append(f"| {space} | {attack} | {_auc(r['pooled'])} | {_auc(r['self'])} | {_tpr(r['self'])} | "
                         f"{gap['mean']:.3f} [{gap['ci95'][0]:.3f}, {gap['ci95'][1]:.3f}] | {gap['share_positive']:.0%} |")
    return lines


def markdown(results: dict, figures: dict[str, Path], out: Path) -> str:
    seg = results["segmentation"]
    lines = [f"# Synthetic vs real: {results['dataset']}, profile `{results['profile']}`", "",
             "U-Net trained on each condition with the same budget, tested on the real test split "
             "(inside the FOV, native resolution). Paper: Guibas, Virdi & Li (2017).", "",
             *_not_comparable_line(results)]
    paper = _comparable(results)
    if len(results.get("seeds", {}).get("seeds", [])) > 1:
        lines += _seeded_table(results)
    else:
        lines += ["| condition | f1_vessel | f1_macro | AUC | accuracy |" + (" paper F1 |" if paper else ""),
                  "|---|---|---|---|---|" + ("---|" if paper else "")]
        for name, values in seg.items():
            lines.append(f"| {name} | {_fmt(values.get('f1_vessel'))} | {_fmt(values.get('f1_macro'))} | "
                         f"{_fmt(values.get('auc'))} | {_fmt(values.get('accuracy'))} |"
                         + (f" {_fmt(PAPER['f1'].get(name))} |" if paper else ""))
        if results.get("observer"):
            o = results["observer"]
            lines.append(f"| 2nd human observer | {_fmt(o.get('f1_vessel'))} | {_fmt(o.get('f1_macro'))} | – | "
                         f"{_fmt(o.get('accuracy'))} |" + (" – |" if paper else ""))
        if results.get("ratio_dual_over_real") is not None:
            lines += ["", f"Ratio dual GAN / real, f1_vessel: **{results['ratio_dual_over_real']:.3f}**"
                      + (" (paper: 0.988)." if paper else ".")]
    if results.get("augmentation"):
        used = ", ".join(f"{condition} `{augmentation}`" for condition, augmentation in results["augmentation"].items())
        lines += ["", f"U-Net training augmentation (`data.augmentation`): {used}."]
    if results.get("decomposition"):
        lines += ["", "## Which stage costs what", "", "Each row compares two conditions that differ by one stage "
                  "(`stage2_real_masks`: Stage II painting the real training masks).", "",
                  "| stage | f1_vessel lost | specificity lost | AUC lost |", "|---|---|---|---|"]
        for stage, cost in results["decomposition"].items():
            lines.append(f"| {stage} | {_fmt(cost.get('f1_vessel_cost'))} | {_fmt(cost.get('specificity_cost'))} | "
                         f"{_fmt(cost.get('auc_cost'))} |")
    if results.get("painter_fidelity"):
        lines += ["", "## Does Stage II paint the vessels it is given?", "",
                  "The real-data U-Net on Stage II's paintings of the real test masks (scored against the painted "
                  "mask) and on the real test photographs. Thin: vessels at most 2 px wide. Contrast: 1 - vessel "
                  "/ local background (green); roughness: the background's relative deviation "
                  "(`metrics/vessel_contrast.py`).", "",
                  "| images | f1_vessel | specificity | recall, thin vessels | recall, thick vessels | contrast, thin | "
                  "contrast, thick | background roughness |", "|---|---|---|---|---|---|---|---|"]
        for name, values in results["painter_fidelity"].items():
            lines.append(f"| {name} | {_fmt(values['f1_vessel'])} | {_fmt(values['specificity'])} | "
                         f"{_fmt(values['recall_thin'])} | {_fmt(values['recall_thick'])} | "
                         f"{_fmt(values.get('contrast_thin'))} | {_fmt(values.get('contrast_thick'))} | "
                         f"{_fmt(values.get('background_roughness'))} |")
    lines += ["", "## Fidelity", "", "| set | KL(real ‖ set), nats | Fréchet (U-Net features) | KID (U-Net features) |"
              + (" paper KL |" if paper else ""), "|---|---|---|---|" + ("---|" if paper else "")]
    kl, fd, kid = results.get("kl", {}), results.get("frechet", {}), results.get("kid", {})
    for name in sorted(set(kl) | set(fd)):
        lines.append(f"| {name} | {_fmt(kl.get(name))} | {_fmt(fd.get(name))} | {_fmt(kid.get(name))} |"
                     + (f" {_fmt(PAPER['kl'].get(name))} |" if paper else ""))
    lines += ["", "`real_subset`: two disjoint halves of the real training set; `real_test`: real training vs test "
              "images. KL sees intensity histograms only; the Fréchet distance and KID see vessel-scale structure (KID is "
              "unbiased at these small sample sizes and can read slightly below 0)."]
    if results.get("stage1"):
        s = results["stage1"]
        lines += ["", "## Stage I samples", "", "The DCGAN's own samples at its `image_size`, before the refiner (and "
                  "before `layout_rotation` turns them), beside the real masks at that size:", "",
                  "| statistic | samples | real masks |", "|---|---|---|"]
        for key in ("vessel_fraction", "pairwise_iou", "copy_iou_max", "components"):
            lines.append(f"| {key} | {_stat(key, s.get(key))} | {_stat(key, s.get('real_' + key))} |")
        anatomy = [k.removeprefix("anatomy/") for k in s if k.startswith("anatomy/")]
        if anatomy:
            histograms = [k for k in ("orientation_hist", "width_hist", "radial") if f"anatomy_vs_real/{k}" in s]
            lines += ["", "At the training images' native size (as exported), per mask; the histograms' rows are total "
                      "variation distances (radial: mean difference of the density around the disc). Real halves: how far "
                      "two random halves of the real masks lie apart by the same measure, the noise floor of the "
                      "comparison.", "",
                      "| anatomy | samples | real masks | relative difference | real halves |", "|---|---|---|---|---|"]
            lines += [f"| {k} | {_stat(k, s.get('anatomy/' + k))} | {_stat(k, s.get('anatomy_real/' + k))} | "
                      f"{_fmt(s.get('anatomy_vs_real/' + k))} | {_fmt(s.get('anatomy_real_halves/' + k))} |"
                      for k in anatomy + histograms]
    if results.get("privacy") or results.get("mia_splits"):
        lines += privacy_markdown(results.get("privacy", {}), results.get("mia_splits"))
    if results.get("synthetic_count"):
        lines += ["", "## Number of synthetic pairs", "", "| pairs | f1_vessel |", "|---|---|"]
        lines += [f"| {n} | {_fmt(f)} |" for n, f in sorted(results["synthetic_count"].items(), key=lambda kv: int(kv[0]))]
    if results.get("data_efficiency"):
        figure = figures.get("data_efficiency")
        lines += efficiency_markdown(results["data_efficiency"], figure and str(figure.relative_to(out)))
    for title, key in (("Samples", "samples"), ("Predictions on the first test image", "overlays"),
                       ("F1 against the number of synthetic pairs", "synthetic_count")):
        if figures.get(key):
            lines += ["", f"## {title}", "", f"![{key}]({figures[key].relative_to(out)})"]
    timing = dict(results["timing_s"])
    wall = timing.pop(STUDY_WALL, None)
    lines += ["", "## Wall time", "", *([f"Study wall time: {wall / 60:.1f} min.", ""] if wall is not None else []),
              "| step | time |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} min |" for k, v in timing.items()]
    return "\n".join(lines + code_lines(results.get("code") or {})) + "\n"


def code_lines(record: dict[str, str]) -> list[str]:
    """Which code the finished steps ran with (`<out>/code.json`): one line, or a warning per version
    when a resumed study mixed code versions."""
    versions: dict[str, list[str]] = {}
    for step, code in sorted(record.items()):
        versions.setdefault(code, []).append(step)
    if not versions:
        return []
    if len(versions) == 1:
        return ["", f"Every step ran with code `{next(iter(versions))}` (a hash of the package, configs and experiments)."]
    return ["", f"**The steps ran with {len(versions)} code versions** (a resumed study whose code changed in between):", "",
            *[f"- `{code}`: {', '.join(names)}" for code, names in versions.items()]]


def write_report(cfg: DictConfig, plan: StudyPlan, steps: list[Step], timing: dict) -> dict:
    out = plan.out
    segmented = [s.name.removeprefix("segment_") for s in steps if s.stage == "segment"]
    main = [c for c in plan.conditions if c in segmented]
    seg = segmentation_results(out, main)
    real, exports = read_dataset(plan.real_data, "train"), read_exports(plan)
    results = {"profile": cfg.profile.name, "dataset": plan.real_data["name"].upper(), "segmentation": seg,
               "augmentation": augmentation_used(out, main),
               **fidelity(plan, real, exports, int(cfg.study.fidelity_tiles)), "timing_s": timing,
               "code": _read_json(out / CODE_RECORD)}
    key, numerator, denominator = RATIO
    ratio = _ratio(*(seg.get(c, {}).get("f1_vessel") for c in (numerator, denominator)))
    if ratio is not None:
        results[key] = ratio
    if decomposition(seg):
        results["decomposition"] = decomposition(seg)
    painter, segmenter = out / "runs" / "train_image" / "checkpoints" / "last.ckpt", out / "runs" / "segment_real" / "checkpoints" / "best.ckpt"
    if painter.is_file() and segmenter.is_file():
        results["painter_fidelity"] = painter_fidelity(str(segmenter), str(painter), read_dataset(plan.real_data, "test"))
    if plan.real_data["name"] == "drive":
        from synthmed_lightning.metrics.observer import second_observer_scores

        results["observer"] = second_observer_scores(plan.real_data["root"])
    stage1 = _read_json(out / "runs" / "train_mask" / "metrics.json")
    if stage1:
        results["stage1"] = {k.removeprefix("val/"): v for k, v in stage1.items() if k.startswith("val/")}
        results["stage1"].update({k: v for k, v in stage1.items() if k.startswith("anatomy")})
    privacy = privacy_results(out, plan.exports)
    if privacy:
        results["privacy"] = privacy
    for condition, guarantee in dp_guarantees(out).items():
        results.setdefault("privacy", {}).setdefault(condition, {})["dp"] = guarantee
    splits = MiaSplits.from_config(cfg.study.get("mia_splits"))
    if splits:
        results["mia_splits"] = mia_splits_results(out, splits)
    # Without the real row and without exports that hold real masks: publishable where the data's licence forbids copies.
    samples_figure(None, {c: s for c, s in exports.items() if c not in HOLDS_REAL_DATA},
                   out / "figures" / "samples_synthetic_only.png")
    figures = {"samples": samples_figure(real, exports, out / "figures" / "samples.png"),
               "overlays": overlays_figure(out, main, out / "figures" / "overlays.png")}
    if plan.synthetic_counts:
        counts = {n: _read_json(out / "runs" / f"segment_{COUNTED}_n{n}" / "metrics.json").get("test/f1_vessel")
                  for n in plan.synthetic_counts if n != plan.num_synthetic}
        counts[plan.num_synthetic] = seg.get(COUNTED, {}).get("f1_vessel")
        results["synthetic_count"] = {str(n): f for n, f in sorted(counts.items()) if f is not None}
        figures["synthetic_count"] = count_plot({int(n): f for n, f in results["synthetic_count"].items()},
                                                out / "figures" / "f1_vs_synthetic_count.png")
    if plan.seeds:
        results["seeds"] = seed_results(out, main, plan.seed, plan.seeds)
    if plan.data_efficiency:
        results["data_efficiency"] = efficiency_results(out / "runs", plan.data_efficiency)
        figures["data_efficiency"] = efficiency_plot(results["data_efficiency"], out / "figures" / "f1_vs_real_count.png")
    write_json(out / "results.json", results)
    (out / "report.md").write_text(markdown(results, figures, out))
    if any("wandb" in str(v.get("_target_", "")).lower() for v in (cfg.get("logger") or {}).values() if v):
        log_to_wandb(cfg, plan, results, figures)
    return results


def log_to_wandb(cfg: DictConfig, plan: StudyPlan, results: dict, figures: dict[str, Path]) -> None:
    """One W&B run of job type `study` in the study's group: the results table, the figures, and each
    export as a dataset artifact (by reference: the files stay where they are)."""
    import wandb

    from synthmed_lightning.loggers import default_wandb_offline

    default_wandb_offline()
    settings = cfg.logger.wandb
    group = next((a.split("=", 1)[1] for a in plan.common_args if a.startswith("run_group=")), None)
    run = wandb.init(project=settings.get("project"), group=group, job_type="study", dir=str(plan.out),
                     config={"profile": results["profile"], "dataset": results["dataset"]}, reinit="finish_previous")
    table = wandb.Table(columns=["condition", *METRIC_NAMES])
    for name, values in results["segmentation"].items():
        table.add_data(name, *[values.get(k) for k in METRIC_NAMES])
    run.log({"results": table, **{f"figures/{k}": wandb.Image(str(p)) for k, p in figures.items() if p},
             **{f"kl/{k}": v for k, v in results.get("kl", {}).items()},
             **{f"frechet/{k}": v for k, v in results.get("frechet", {}).items()},
             **{f"kid/{k}": v for k, v in results.get("kid", {}).items()}})
    for condition in finished_exports(plan):
        export = plan.export_dir(condition)
        manifest = _read_json(export / "manifest.json")
        artifact = wandb.Artifact(f"synthetic-{condition}", type="dataset",
                                  metadata={"seed": manifest.get("seed"), "files": len(manifest.get("files", {}))})
        artifact.add_reference(export.absolute().as_uri())
        run.log_artifact(artifact)
    run.finish()
