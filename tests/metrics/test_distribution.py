"""KL of intensity histograms and the Fréchet distance, on hand-made data with known answers."""

import numpy as np
import pytest

from synthmed_lightning.metrics.distribution import frechet_distance, histogram_kl, intensity_histograms, intensity_kl


def _image(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def test_histograms_count_only_pixels_inside_the_fov():
    fov = np.zeros((8, 8), np.uint8)
    fov[:2] = 1
    counts = intensity_histograms([_image(10)], [fov])
    assert counts.shape == (3, 256)
    assert counts[:, 10].tolist() == [16, 16, 16] and counts.sum() == 48


def test_kl_is_zero_for_identical_sets_and_grows_with_distance():
    fov = np.ones((8, 8), np.uint8)
    same = intensity_kl(([_image(100)], [fov]), ([_image(100)], [fov]))
    near = intensity_kl(([_image(100)], [fov]), ([_image(100), _image(101)], [fov, fov]))
    far = intensity_kl(([_image(100)], [fov]), ([_image(200)], [fov]))
    assert same == pytest.approx(0.0, abs=1e-12)
    assert 0 < near < far


def test_kl_matches_the_formula_with_add_one_smoothing():
    real = np.array([[3.0, 1.0]])
    other = np.array([[1.0, 3.0]])
    p, q = np.array([4, 2]) / 6, np.array([2, 4]) / 6
    assert histogram_kl(real, other) == pytest.approx(float(np.sum(p * np.log(p / q))))


def test_frechet_distance_of_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # Same covariance, mean shifted by 2 along one axis: distance = 4.
    assert frechet_distance(a, a + np.array([2.0, 0, 0])) == pytest.approx(4.0, rel=1e-6)
    # Scaled by 2: tr(S + 4S - 2 * 2S) = tr(S) ~ 3.
    assert frechet_distance(a, 2 * (a - a.mean(0)) + a.mean(0)) == pytest.approx(3.0, rel=0.05)


def test_frechet_distance_rejects_mismatched_features():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
