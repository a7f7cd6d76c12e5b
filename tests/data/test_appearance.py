"""data/appearance.py: per-image colour statistics, colour transfer, and the appearance model."""

import numpy as np
import pytest

from synthmed_lightning.data.appearance import AppearanceModel, colour_statistics, transfer_colour


def _image(seed: int, brightness: float):
    rng = np.random.default_rng(seed)
    fov = np.zeros((40, 50), np.uint8)
    fov[5:-5, 5:-5] = 1
    image = np.clip(rng.normal([brightness, brightness / 2, brightness / 4], [20, 10, 5], (40, 50, 3)), 0, 255)
    return (image * fov[..., None]).astype(np.uint8), fov


def test_colour_statistics_look_only_inside_the_fov():
    image, fov = _image(0, 160)
    stats = colour_statistics(image, fov)
    inside = image[fov == 1].astype(float)
    np.testing.assert_allclose(stats, np.concatenate([inside.mean(0), inside.std(0)]))
    assert stats[0] > 150  # the black outside would pull the mean down
    with pytest.raises(ValueError, match="FOV is empty"):
        colour_statistics(image, np.zeros_like(fov))


def test_transfer_colour_reaches_the_target_and_keeps_outside_black():
    image, fov = _image(1, 120)
    target = np.array([180.0, 90.0, 50.0, 30.0, 15.0, 8.0])
    moved = transfer_colour(image, fov, target)
    np.testing.assert_allclose(colour_statistics(moved, fov), target, atol=1.0)
    assert not moved[fov == 0].any()
    # Structure is kept: the moved channel is an increasing function of the original.
    order = np.argsort(image[fov == 1][:, 0], kind="stable")
    assert np.all(np.diff(moved[fov == 1][:, 0][order].astype(int)) >= 0)


def test_transfer_colour_without_contrast_only_shifts_the_means():
    image, fov = _image(2, 120)
    target = np.array([150.0, 70.0, 40.0, 99.0, 99.0, 99.0])
    moved = transfer_colour(image, fov, target, contrast=False)
    stats, before = colour_statistics(moved, fov), colour_statistics(image, fov)
    np.testing.assert_allclose(stats[:3], target[:3], atol=1.0)
    np.testing.assert_allclose(stats[3:], before[3:], atol=0.5)  # the painting's own contrast


def test_model_fits_samples_reproducibly_and_round_trips():
    pairs = [_image(seed, brightness) for seed, brightness in enumerate([100, 140, 180, 220])]
    model = AppearanceModel.fit(*zip(*pairs))
    stats = np.stack([colour_statistics(*p) for p in pairs])
    np.testing.assert_allclose(model.mean, stats.mean(0))
    assert model.covariance.shape == (6, 6) and model.covariance[0, 0] > 1000  # brightness varies
    np.testing.assert_array_equal(model.sample(5), model.sample(5))
    draws = np.stack([model.sample(seed) for seed in range(400)])
    assert abs(draws[:, 0].mean() - model.mean[0]) < 8 and draws[:, 0].std() > 25
    assert (draws[:, 3:] >= 1).all()
    restored = AppearanceModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(restored.sample(3), model.sample(3))
