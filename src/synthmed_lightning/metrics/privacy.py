"""Privacy metrics of a synthetic set against the real images its generators learned from.

A synthetic set leaks when it holds copies (or near copies) of training images, or when being in
the training set makes a real image measurably closer to the synthetic set than a comparable image
that was not. All functions work on feature vectors (one row per image, or one per view of an
image such as its flips) in any space: pixels of a downsampled image inside its FOV, or a
network's features; distances are root-mean-square Euclidean (the L2 distance divided by
sqrt(dimension)), so their scale does not depend on the feature size. docs/privacy.md says how
to read every number.

- `nearest_neighbours`: each query's nearest reference and its distance (optionally leaving out the
  query itself when both sets are the same).
- `near_copy_threshold`: a distance calibrated on real data: the `percentile`-th percentile of
  the training images' leave-one-out nearest-neighbour distances. Two different real patients'
  images are rarely this close, so a synthetic image this close to a training image is a near copy.
- Membership scores of the real images, higher meaning "more likely a member" (a training image):
  `raw_scores`, minus the distance to the nearest synthetic image (Hilprecht et al. 2019; Chen et
  al. 2020, GAN-leaks), and `calibrated_scores`, that distance relative to the image's distance to
  its nearest other real image, in logs. The raw score mostly says how typical an image is (a
  typical image is close to everything); the calibrated one asks whether the synthetic set is
  closer to it than its own kind is.
- `membership_attack`: how well scores tell members from held-out images: the ROC AUC (0.5: no
  leak, 1.0: every member above every held-out image) with a stratified bootstrap 95 % interval,
  and the true-positive rate at 1 % and 10 % false positives.
- `privacy_report`: all of that for one space; `negative_control` (a set that holds no member)
  and `control_detection` (did the audit see planted copies?) read it against controls.
- `repeated_split_attack`: the analysis of `experiment=mia_splits`, where every image is a member
  in some runs and not in others, so each image is compared with itself.

The AUC is scipy's Mann-Whitney U (AUC = U / (n+ n-), exact in float64), the ROC curve (TPR at a
false-positive rate) torchmetrics', the interval `scipy.stats.bootstrap` with that U as its
statistic, vectorised over all resamples at once.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

_CHUNK = 1024
# False-positive rates at which the attacks report their true-positive rate: a leak that matters
# shows at low FPR (Carlini et al. 2022), an average over all thresholds (the AUC) can hide it.
FPR_LEVELS = (0.01, 0.10)
BOOTSTRAP_DRAWS = 2000


def _as_views(x) -> torch.Tensor:
    """(n, d) or (n, views, d) -> float64 (n, views, d)."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x, dtype=torch.float64)
    if x.dim() == 2:
        x = x[:, None]
    if x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"expected non-empty feature vectors, (n, d) or (n, views, d), got shape {tuple(x.shape)}")
    return x


def nearest_neighbours(query, reference, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(distance, index) of each query item's nearest reference item, RMS Euclidean.

    Items are rows of (n, d), or (n, views, d) for several views of one image (e.g. its flips):
    two items are as far apart as their closest pair of views, so a flipped copy is still a copy.
    `exclude_self=True` (query and reference the same set): an item is not its own neighbour.
    """
    q, r = _as_views(query), _as_views(reference)
    if q.shape[2] != r.shape[2]:
        raise ValueError(f"query has {q.shape[2]} features, reference {r.shape[2]}")
    if exclude_self and (q.shape[0] != r.shape[0] or r.shape[0] < 2):
        raise ValueError("exclude_self needs the same set of at least two items as query and reference")
    n, m, dim = q.shape[0], r.shape[0], q.shape[2]
    flat_reference = r.reshape(-1, dim)
    distances, indices = [], []
    for start in range(0, n, _CHUNK):
        chunk = q[start: start + _CHUNK]
        # Matrix-product distances are ~5x faster than cdist's direct ones at these sizes but round
        # (|a|^2 + |b|^2 - 2ab): they only choose the nearest pair, whose distance is then computed exactly.
        d = torch.cdist(chunk.reshape(-1, dim), flat_reference, compute_mode="use_mm_for_euclid_dist")
        d = d.reshape(chunk.shape[0], chunk.shape[1], m, r.shape[1]).permute(0, 2, 1, 3).reshape(chunk.shape[0], m, -1)
        d, pair = d.min(dim=2)  # closest pair of views of every (query, reference) item
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = float("inf")
        best = d.min(dim=1).indices
        rows = torch.arange(chunk.shape[0])
        pair = pair[rows, best]
        exact = chunk[rows, pair // r.shape[1]] - r[best, pair % r.shape[1]]
        distances.append(exact.norm(dim=1))
        indices.append(best)
    return (torch.cat(distances) / float(dim) ** 0.5).numpy(), torch.cat(indices).numpy()


def near_copy_threshold(train, percentile: float = 5.0) -> float:
    """The `percentile`-th percentile of the training set's leave-one-out nearest-neighbour distances."""
    _check_percentile(percentile)
    distances, _ = nearest_neighbours(train, train, exclude_self=True)
    return float(np.percentile(distances, percentile))


def _check_percentile(percentile: float) -> float:
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile={percentile}: must be in [0, 100]")
    return float(percentile)


def count_near_copies(distances, threshold: float) -> int:
    """Synthetic images at most `threshold` from their nearest training image (exact copies included)."""
    return int(np.count_nonzero(np.asarray(distances) <= threshold))


def _two_groups(positive, negative) -> tuple[np.ndarray, np.ndarray]:
    pos = np.asarray(positive, dtype=np.float64).ravel()
    neg = np.asarray(negative, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError("an AUC needs at least one positive and one negative score")
    return pos, neg


def _as_probabilities(pos: np.ndarray, neg: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(preds, target) for torchmetrics: the scores' average ranks scaled into (0, 1]. torchmetrics
    reads values outside [0, 1] as logits and squashes them, which in float32 turns large scores
    (an exact copy's) into ties; ranks keep the order and the ties exactly."""
    from scipy.stats import rankdata

    scores = np.concatenate([pos, neg])
    preds = torch.from_numpy(rankdata(scores) / scores.size)
    return preds, torch.cat([torch.ones(pos.size, dtype=torch.long), torch.zeros(neg.size, dtype=torch.long)])


def roc_auc(positive_scores, negative_scores) -> float:
    """P(a positive scores higher than a negative), ties counting one half: scipy's Mann-Whitney U / (n+ n-),
    the statistic the bootstrap resamples. (torchmetrics' AUROC is the same number in float32, where a
    perfect 1.0 can come out as 0.9999999.)"""
    return float(_auc_statistic(*_two_groups(positive_scores, negative_scores)))


def tpr_at_fpr(positive_scores, negative_scores, levels=FPR_LEVELS) -> dict[str, float]:
    """{"1%": TPR, ...}: the share of positives caught at the strictest threshold whose false-positive
    rate is at most each level. With n negatives, any level below 1/n means "above every negative"."""
    from torchmetrics.functional.classification import binary_roc

    fpr, tpr, _ = binary_roc(*_as_probabilities(*_two_groups(positive_scores, negative_scores)))
    fpr, tpr = fpr.double().numpy(), tpr.double().numpy()
    slack = 1e-6  # torchmetrics' rates are float32 (1/10 is a hair above 0.1): compare and report at 1e-6
    return {f"{level:.0%}": round(float(tpr[fpr <= level + slack].max()), 6) for level in levels}


def _auc_statistic(positive, negative, axis=-1):
    """AUC of many resamples at once (scipy's bootstrap passes them stacked along other axes)."""
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(positive, negative, axis=axis, method="asymptotic").statistic
    return u / (np.shape(positive)[axis] * np.shape(negative)[axis])


def _auc_of_rows(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUC of each row of (..., n) scores whose positives `labels` marks (a different split per row):
    the positives' rank sum, less its least possible value, over n+ n- (Mann-Whitney U)."""
    from scipy.stats import rankdata

    ranks = rankdata(values, axis=-1)
    positives = labels.sum(axis=-1)
    negatives = labels.shape[-1] - positives
    return ((ranks * labels).sum(axis=-1) - positives * (positives + 1) / 2) / (positives * negatives)


def auc_interval(positive_scores, negative_scores, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95 % interval of `roc_auc`: positives and negatives resampled with replacement, each
    group on its own (a stratified bootstrap), percentile method. BCa would be the default, but an
    AUC of 1.0 (every resample the same) leaves it undefined, and that is exactly a leaky set's reading.
    A group of one score cannot be resampled: the interval is then all of [0, 1]."""
    from scipy.stats import bootstrap

    pos, neg = _two_groups(positive_scores, negative_scores)
    if min(pos.size, neg.size) < 2:
        return 0.0, 1.0
    with warnings.catch_warnings():  # "degenerate": every resample gave the same AUC, e.g. 1.0
        warnings.simplefilter("ignore")
        result = bootstrap((pos, neg), _auc_statistic, n_resamples=draws, vectorized=True, method="percentile",
                           rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float(low), float(high)


def raw_scores(to_synthetic) -> np.ndarray:
    """Membership score of the plain distance attack: minus the distance to the nearest synthetic image."""
    return -np.asarray(to_synthetic, dtype=np.float64)


def calibrated_scores(to_synthetic, to_real) -> np.ndarray:
    """log(distance to the nearest other real image) - log(distance to the nearest synthetic image).

    0: the synthetic set is as close to the image as its nearest fellow patient; 1: e times closer.
    Dividing by the image's own real-data neighbourhood takes out how typical it is (a typical image
    is close to everything, a member or not), leaving how much closer the generators came to it.
    """
    tiny = np.finfo(np.float64).tiny  # an exact copy (distance 0) scores very high, not infinite
    return (np.log(np.maximum(np.asarray(to_real, dtype=np.float64), tiny))
            - np.log(np.maximum(np.asarray(to_synthetic, dtype=np.float64), tiny)))


def membership_attack(member_scores, outsider_scores, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict:
    """{auc, auc_ci95, tpr_at_fpr} of scores (higher: "member") of members and of held-out images."""
    return {"auc": roc_auc(member_scores, outsider_scores),
            "auc_ci95": list(auc_interval(member_scores, outsider_scores, draws, seed)),
            "tpr_at_fpr": tpr_at_fpr(member_scores, outsider_scores)}


def membership_inference_auc(train_to_synthetic, holdout_to_synthetic) -> float:
    """AUC of the raw attack "closer to the synthetic set means member": inputs are each real image's
    distance to its nearest synthetic image, for training images (members) and held-out images."""
    return roc_auc(raw_scores(train_to_synthetic), raw_scores(holdout_to_synthetic))


def membership_inference_interval(train_to_synthetic, holdout_to_synthetic, draws: int = BOOTSTRAP_DRAWS,
                                  seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95 % interval of `membership_inference_auc` (`auc_interval`)."""
    return auc_interval(raw_scores(train_to_synthetic), raw_scores(holdout_to_synthetic), draws, seed)


def distance_summary(distances) -> dict[str, float]:
    d = np.asarray(distances, dtype=np.float64)
    return {"min": float(d.min()), "p05": float(np.percentile(d, 5)), "median": float(np.median(d)),
            "mean": float(d.mean()), "max": float(d.max())}


def privacy_report(synthetic, train, holdout, percentile: float = 5.0, draws: int = BOOTSTRAP_DRAWS,
                   seed: int = 0) -> dict:
    """Everything the audit reports for one feature space (items: (n, d) or (n, views, d), see `nearest_neighbours`).

    nn_synthetic_to_train / nn_train_to_train (leave-one-out) / nn_holdout_to_train: distance summaries;
    the synthetic set should sit no closer to the training images than held-out real images do
    (`synthetic_vs_holdout_median` < 1 says closer). near_copy_threshold, near_copies (count) and
    near_copy_fraction; holdout_near_copies (held-out real images under the threshold: the false-alarm
    count to read near_copies against). The attacks: `raw` and `calibrated` (`membership_attack`);
    mia_auc and mia_auc_ci95 repeat the raw one. The calibration's real reference is every scored real
    image (members and held-out alike, leaving the image itself out), so both groups are treated
    the same. Also, per synthetic image, its nearest training index and distance, and per real image
    (members first) its two scores.
    """
    _check_percentile(percentile)
    syn_d, syn_i = nearest_neighbours(synthetic, train)
    train_d, _ = nearest_neighbours(train, train, exclude_self=True)
    holdout_d, _ = nearest_neighbours(holdout, train)
    threshold = float(np.percentile(train_d, percentile))
    real = torch.cat([_as_views(train), _as_views(holdout)])
    members = np.arange(len(real)) < len(train)
    to_synthetic, _ = nearest_neighbours(real, synthetic)
    to_real, _ = nearest_neighbours(real, real, exclude_self=True)
    raw, calibrated = raw_scores(to_synthetic), calibrated_scores(to_synthetic, to_real)
    raw_attack = membership_attack(raw[members], raw[~members], draws, seed)
    copies = count_near_copies(syn_d, threshold)
    return {
        "nn_synthetic_to_train": distance_summary(syn_d),
        "nn_train_to_train": distance_summary(train_d),
        "nn_holdout_to_train": distance_summary(holdout_d),
        "synthetic_vs_holdout_median": float(np.median(syn_d) / max(np.median(holdout_d), 1e-12)),
        "near_copy_percentile": float(percentile),
        "near_copy_threshold": threshold,
        "near_copies": copies,
        "near_copy_fraction": copies / len(syn_d),
        # The same test on held-out real images: how often a fresh patient is "a near copy" (false alarms).
        "holdout_near_copies": count_near_copies(holdout_d, threshold),
        "raw": raw_attack,
        "calibrated": membership_attack(calibrated[members], calibrated[~members], draws, seed),
        "mia_auc": raw_attack["auc"],
        "mia_auc_ci95": raw_attack["auc_ci95"],
        "per_synthetic": {"distance": syn_d, "nearest_train": syn_i},
        "per_real": {"member": members, "raw": raw, "calibrated": calibrated},
    }


def negative_control(train, holdout, percentile: float = 5.0, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict:
    """`privacy_report` of a "synthetic" set that holds no member: a seeded random half of the held-out
    images (their first view only, as a synthetic image has one) stands in for the export, and the
    members are tested against the other half. Its attack readings are what "no leak" looks like
    on this split with this many images. Adds `stand_in_count` and `holdout_count` (the half tested)."""
    held = _as_views(holdout)
    if len(held) < 2:
        raise ValueError("the negative control needs at least two held-out images (one stands in, one is tested)")
    order = np.random.default_rng(seed).permutation(len(held))
    stand_in, tested = order[: len(held) // 2], order[len(held) // 2:]
    report = privacy_report(held[stand_in, :1], train, held[tested], percentile, draws, seed)
    return {**report, "stand_in_count": len(stand_in), "holdout_count": len(tested)}


def no_leak_floor(negative_auc: float) -> float:
    """The AUC a leak must beat: the negative control's reading, or 0.5 where it reads lower. A set
    without members has AUC 0.5 in expectation; a negative control reading below that is chance
    (about +-0.15 with DRIVE's images), and a floor lowered by chance would call a clean set leaky
    far more often than the interval's 2.5 %. A reading above 0.5 is kept: the split itself
    separates members from held-out images that much."""
    return max(0.5, float(negative_auc))


def control_detection(report: dict, planted, negative_auc: float) -> dict:
    """Did the audit see the `planted` synthetic rows (indices of perturbed training images)?
    planted_flagged: how many of them are near copies (`near_copies_found`: at least one);
    `auc_above_negative`: the calibrated AUC's interval lies wholly above `no_leak_floor(negative_auc)`.
    `detected`: either."""
    planted = np.asarray(planted, dtype=np.int64)
    flagged = int(np.count_nonzero(report["per_synthetic"]["distance"][planted] <= report["near_copy_threshold"]))
    above = bool(report["calibrated"]["auc_ci95"][0] > no_leak_floor(negative_auc))
    return {"planted": int(planted.size), "planted_flagged": flagged, "near_copies_found": flagged > 0,
            "auc_above_negative": above, "detected": flagged > 0 or above}


def repeated_split_attack(scores, members, draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict:
    """The membership attack over repeated splits (`experiment=mia_splits`): `scores` (images, runs),
    higher meaning "member", from runs whose generators trained on different subsets; `members`
    (images, runs) bool says which. Every image must be a member in at least one run and out of
    at least two.

    - pooled: the ordinary attack on all (image, run) scores, what one audit per run measures;
    - self: each score minus the mean of the same image's scores in the other runs where it was
      out (leave that run out): the image compared with itself (LiRA's offline variant, Carlini et
      al. 2022), so how typical it is cancels;
    - gap: per image, mean score in minus mean score out; its mean over images with a bootstrap
      interval over images, and the share of images scoring higher as members.
    AUC intervals resample images (with all their runs), since one image's runs are not independent.
    """
    from scipy.stats import bootstrap

    scores, members = np.asarray(scores, dtype=np.float64), np.asarray(members, dtype=bool)
    if scores.shape != members.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and members {members.shape} must be the same (images, runs) shape")
    ins, outs = members.sum(axis=1), (~members).sum(axis=1)
    if ins.min() < 1 or outs.min() < 2:
        raise ValueError("every image must be a member in at least one run and out of at least two")
    out_sum = np.where(members, 0.0, scores).sum(axis=1, keepdims=True)
    # Mean of the image's out-scores, leaving out this run's own score when it was out.
    reference = (out_sum - np.where(members, 0.0, scores)) / (outs[:, None] - (~members))
    self_scores = scores - reference
    gap = (np.where(members, scores, 0.0).sum(axis=1) / ins) - (out_sum[:, 0] / outs)

    def resampled_auc(values):
        def statistic(images, axis=-1):  # images: (..., n) indices of resampled images, all their runs kept
            images = np.asarray(images, dtype=np.int64)
            flat = (*images.shape[:-1], -1)
            return _auc_of_rows(values[images].reshape(flat), members[images].reshape(flat))
        return statistic

    def attack(values):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = bootstrap((np.arange(len(values)),), resampled_auc(values), n_resamples=draws, vectorized=True,
                           method="percentile", rng=np.random.default_rng(seed)).confidence_interval
        return {"auc": roc_auc(values[members], values[~members]), "auc_ci95": [float(ci.low), float(ci.high)],
                "tpr_at_fpr": tpr_at_fpr(values[members], values[~members])}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gap_ci = bootstrap((gap,), np.mean, n_resamples=draws, method="percentile",
                           rng=np.random.default_rng(seed)).confidence_interval
    return {"images": int(scores.shape[0]), "runs": int(scores.shape[1]),
            "pooled": attack(scores), "self": attack(self_scores),
            "gap": {"mean": float(gap.mean()), "ci95": [float(gap_ci.low), float(gap_ci.high)],
                    "share_positive": float(np.mean(gap > 0))}}
