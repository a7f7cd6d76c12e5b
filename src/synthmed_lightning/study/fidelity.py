"""Fidelity of the synthetic exports against the real training images (`metrics/distribution.py`).

* KL (the paper's measure) of each export against the real training set, and the control of two
  disjoint halves of the real training set (~0.38 nats on DRIVE) and of training vs test.
* Fréchet distance in the trained real-data U-Net's bottleneck features, on random tiles inside
  the FOV; every set contributes the same number of images (the distance is biased by N), and
  the control is real training vs real test images. KID on the same features beside it: unbiased,
  so it does not depend on N as the Fréchet distance does.
* Painter fidelity: whether Stage II's paintings carry the vessels they were given, thin ones
  included, as the real-data U-Net sees them, and how dark those vessels and how rough the
  background are beside the photographs' (`painter_fidelity`, `metrics/vessel_contrast.py`).
"""

import numpy as np
import torch

from synthmed_lightning.checkpoints import load_module
from synthmed_lightning.data.sample import Sample
from synthmed_lightning.data.transforms import DEFAULT_PREPROCESS, preprocess, to_tensor_layout
from synthmed_lightning.metrics.distribution import frechet_distance, intensity_kl, kernel_distance
from synthmed_lightning.metrics.vessel_contrast import mean_vessel_contrast, thin_vessels

_MAX_TILE = 128


def kl_to_real(real: list[Sample], others: dict[str, list[Sample]], test: list[Sample] | None = None) -> dict[str, float]:
    """{name: KL(real || other)} for each synthetic set, plus `real_subset` (halves of `real`)
    and, given `test`, `real_test`."""
    as_pair = lambda samples: ([s.image for s in samples], [s.fov for s in samples])  # noqa: E731
    out = {name: intensity_kl(as_pair(real), as_pair(samples)) for name, samples in others.items()}
    half = len(real) // 2
    if half >= 1:
        out["real_subset"] = intensity_kl(as_pair(real[:half]), as_pair(real[half:]))
    if test:
        out["real_test"] = intensity_kl(as_pair(real), as_pair(test))
    return out


class TileFeatures:
    """Mean-pooled bottleneck features of a trained segmenter on random FOV tiles of images."""

    def __init__(self, segment_ckpt: str, tiles_per_image: int = 16, seed: int = 0):
        from synthmed_lightning.models.segmenter import Segmenter

        self.model = load_module(Segmenter, segment_ckpt, "segment").eval()
        self.preprocess = dict(self.model.hparams.preprocess or DEFAULT_PREPROCESS)
        self.tiles_per_image = tiles_per_image
        self.seed = seed

    def _tile_size(self, samples: list[Sample]) -> int:
        multiple = getattr(self.model.net, "size_multiple", 16)
        side = min(_MAX_TILE, *(min(s.image.shape[:2]) for s in samples))
        return max(multiple, side // multiple * multiple)

    @torch.no_grad()
    def __call__(self, samples: list[Sample], tile: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        tiles = []
        for sample in samples:
            image = to_tensor_layout(preprocess(sample.image, **self.preprocess))
            h, w = sample.fov.shape
            ys, xs = np.nonzero(sample.fov[tile // 2: h - tile // 2 + 1, tile // 2: w - tile // 2 + 1])
            if ys.size == 0:
                ys, xs = np.array([0]), np.array([0])
            for k in rng.integers(len(ys), size=self.tiles_per_image):
                y, x = min(ys[k], h - tile), min(xs[k], w - tile)
                tiles.append(image[:, y: y + tile, x: x + tile])
        features = [self.model.net.encode(torch.from_numpy(np.stack(chunk)))[-1].mean(dim=(2, 3))
                    for chunk in np.array_split(np.stack(tiles), max(1, len(tiles) // 64))]
        return torch.cat(features).numpy()


def feature_distances_to_real(segment_ckpt: str, real: list[Sample], others: dict[str, list[Sample]],
                              test: list[Sample] | None = None, tiles_per_image: int = 16) -> dict[str, dict[str, float]]:
    """{"frechet": {name: Fréchet distance to `real`}, "kid": {name: KID to `real`}} on as many images
    of each set as `real` has (at most), plus `real_test` (real training vs real test images) as the
    reference. Each set's features are computed once for both measures."""
    features = TileFeatures(segment_ckpt, tiles_per_image)
    n = len(real)
    sets = {name: samples[:n] for name, samples in others.items()}
    if test:
        sets["real_test"] = test[:n]
    tile = features._tile_size([*real, *[s for v in sets.values() for s in v]])
    reference = features(real, tile)
    out = {"frechet": {}, "kid": {}}
    for name, samples in sets.items():
        if samples:
            other = features(samples, tile)
            out["frechet"][name] = frechet_distance(reference, other)
            out["kid"][name] = kernel_distance(reference, other)
    return out


def vessel_scores(probs: np.ndarray, mask: np.ndarray, fov: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """f1_vessel, specificity, and recall of thin and thick vessel pixels, inside the FOV."""
    inside, truth = fov > 0, mask > 0
    predicted = (probs >= threshold) & inside
    thin = thin_vessels(mask) & inside
    thick = truth & inside & ~thin
    tp, fp = np.count_nonzero(predicted & truth), np.count_nonzero(predicted & ~truth)
    fn, tn = np.count_nonzero(~predicted & truth & inside), np.count_nonzero(~predicted & ~truth & inside)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "thin": np.count_nonzero(thin),
            "thin_found": np.count_nonzero(predicted & thin), "thick": np.count_nonzero(thick),
            "thick_found": np.count_nonzero(predicted & thick)}


def _summary(counts: list[dict]) -> dict[str, float]:
    total = {key: sum(c[key] for c in counts) for key in counts[0]}
    return {"f1_vessel": 2 * total["tp"] / max(1, 2 * total["tp"] + total["fp"] + total["fn"]),
            "specificity": total["tn"] / max(1, total["tn"] + total["fp"]),
            "recall_thin": total["thin_found"] / max(1, total["thin"]),
            "recall_thick": total["thick_found"] / max(1, total["thick"])}


@torch.no_grad()
def painter_fidelity(segment_ckpt: str, image_ckpt: str, masks: list[Sample]) -> dict[str, dict[str, float]]:
    """How well Stage II's paintings carry the vessels they were given. The real-data U-Net
    segments Stage II's paintings of real masks it never trained on (the test split's) and is scored
    against the painted mask; the same U-Net on the real photographs of those masks is the reference.
    Recall is split into thin (<= 2 px) and thick vessels: thin ones are what a painter loses first.
    Each set also gets its vessel contrast and background roughness (`mean_vessel_contrast`).
    Paintings keep pix2pix's own colour (`painted`): this measures the painter, not the colour draws."""
    from synthmed_lightning.models.segmenter import Segmenter
    from synthmed_lightning.synthesis import Painter

    model = load_module(Segmenter, segment_ckpt, "segment").eval()
    prep = dict(model.hparams.preprocess or DEFAULT_PREPROCESS)
    painter = Painter(image_ckpt, torch.device("cpu"), "painted")
    scores = {"painted": [], "real": []}
    images = {"painted": [], "real": []}
    for sample in masks:
        fov, mask = (sample.fov > 0).astype(np.uint8), (sample.mask > 0).astype(np.uint8)
        painting = painter((mask & fov)[None], fov[None], [0])[0]
        for name, image in (("painted", painting), ("real", sample.image)):
            images[name].append(image)
            x = torch.from_numpy(to_tensor_layout(preprocess(image, **prep)))[None]
            probs = model.predict_probabilities(x, sample.fov_diameter)[0, 0].float().numpy()
            scores[name].append(vessel_scores(probs, mask, fov, float(model.hparams.threshold)))
    masks_, fovs = [s.mask for s in masks], [s.fov for s in masks]
    return {name: {**_summary(counts), **mean_vessel_contrast(images[name], masks_, fovs)}
            for name, counts in scores.items()}
