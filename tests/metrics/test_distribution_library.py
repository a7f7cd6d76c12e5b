"""The Fréchet distance and KID come from torchmetrics: the Fréchet value against the hand-written
eigendecomposition it replaced, KID against its formula, and the study's fidelity keys."""

import numpy as np
import pytest
import torch

from synthmed_lightning.metrics.distribution import frechet_distance, kernel_distance
from synthmed_lightning.study import fidelity


def _previous_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The implementation torchmetrics replaced: symmetric square roots by eigendecomposition."""
    def sqrtm_psd(matrix):
        values, vectors = np.linalg.eigh(matrix)
        return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T

    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = sqrtm_psd(cov_a)
    cross = sqrtm_psd(root_a @ cov_b @ root_a)
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross))


def _relu_features(rng, n: int, d: int, shift: float) -> np.ndarray:
    """Non-negative, correlated features with a non-zero mean, like pooled ReLU activations."""
    mix = np.random.default_rng(1).normal(size=(d, d)) / np.sqrt(d)
    return np.maximum(rng.normal(shift, 1.0, (n, d)) @ mix, 0) * 2 + 1


# (N, D): many samples; the study's size (20 images x 16 tiles, a 256-wide bottleneck); fewer samples than D.
@pytest.mark.parametrize("n, d", [(2000, 8), (320, 256), (64, 128)])
def test_frechet_distance_equals_the_previous_implementation(n, d):
    rng = np.random.default_rng(0)
    a, b = _relu_features(rng, n, d, 0.3), _relu_features(rng, n, d, 0.4)
    assert frechet_distance(a, b) == pytest.approx(_previous_frechet(a, b), rel=1e-3)


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    kernel = lambda u, v: (u @ v.T / u.shape[1] + 1) ** 3  # noqa: E731
    m = len(x)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
    return float(off(kxx) + off(kyy) - 2 * kxy.mean())


def test_kid_of_whole_equal_sets_is_the_unbiased_mmd():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (50, 6)), rng.normal(0.5, 1, (50, 6))
    assert kernel_distance(a, b) == pytest.approx(_unbiased_mmd2(a, b), rel=1e-9)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (300, 16))
    same, near, far = (kernel_distance(a, rng.normal(shift, 1, (200, 16))) for shift in (0.0, 0.3, 1.0))
    assert abs(same) < 0.1 * near and 0 < near < far


def test_kid_subsets_fit_the_smaller_set_and_are_reproducible_without_touching_the_global_rng():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (40, 4)), rng.normal(0.5, 1, (25, 4))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = kernel_distance(a, b, subset_size=1000)  # more than either set: subsets of 25
    assert torch.equal(torch.get_rng_state(), state)
    assert kernel_distance(a, b) == first and kernel_distance(a, b, seed=1) != first


def test_kid_rejects_mismatched_features():
    with pytest.raises(ValueError, match="same D"):
        kernel_distance(np.zeros((5, 3)), np.zeros((5, 4)))


def test_study_fidelity_reports_kid_beside_the_frechet_distance(monkeypatch):
    """`feature_distances_to_real` with the U-Net's tile features replaced by a fixed draw per set."""
    class FakeFeatures:
        def __init__(self, segment_ckpt, tiles_per_image):
            self.tiles_per_image = tiles_per_image

        def _tile_size(self, samples):
            return 16

        def __call__(self, samples, tile):
            seed, shift = samples[0]
            return np.random.default_rng(seed).normal(shift, 1, (len(samples) * self.tiles_per_image, 8))

    monkeypatch.setattr(fidelity, "TileFeatures", FakeFeatures)
    real = [(0, 0.0)] * 4
    others = {"near": [(1, 0.1)] * 6, "far": [(2, 2.0)] * 4, "empty": []}
    out = fidelity.feature_distances_to_real("unused.ckpt", real, others, test=[(3, 0.0)] * 4, tiles_per_image=8)
    assert set(out) == {"frechet", "kid"}
    assert set(out["frechet"]) == set(out["kid"]) == {"near", "far", "real_test"}
    assert out["kid"]["far"] > out["kid"]["near"] and out["frechet"]["far"] > out["frechet"]["near"]
