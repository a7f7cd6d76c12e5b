"""Fidelity of the synthetic exports against the real training images (`metrics/distribution.py`).

* KL (the paper's measure) of each export against the real training set, and the control of two
  disjoint halves of the real training set (~0.38 nats on DRIVE) and of training vs test.
* Fréchet distance in the trained real-data U-Net's bottleneck features, on random tiles inside
  the FOV; every set contributes the same number of images (the distance is biased by N), and
  the control is real training vs real test images.
"""

import numpy as np
import torch

from synthmed_lightning.checkpoints import load_module
from synthmed_lightning.data.sample import Sample
from synthmed_lightning.data.transforms import DEFAULT_PREPROCESS, preprocess, to_tensor_layout
from synthmed_lightning.metrics.distribution import frechet_distance, intensity_kl

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


def frechet_to_real(segment_ckpt: str, real: list[Sample], others: dict[str, list[Sample]],
                    test: list[Sample] | None = None, tiles_per_image: int = 16) -> dict[str, float]:
    """{name: Fréchet distance to `real`} on as many images of each set as `real` has (at most),
    plus `real_test` (real training vs real test images) as the reference."""
    features = TileFeatures(segment_ckpt, tiles_per_image)
    n = len(real)
    sets = {name: samples[:n] for name, samples in others.items()}
    if test:
        sets["real_test"] = test[:n]
    tile = features._tile_size([*real, *[s for v in sets.values() for s in v]])
    reference = features(real, tile)
    return {name: frechet_distance(reference, features(samples, tile)) for name, samples in sets.items() if samples}
