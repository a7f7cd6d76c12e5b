"""Vessel contrast and background roughness on hand-made images whose values are known."""

import numpy as np
import pytest

from synthmed_lightning.metrics.vessel_contrast import mean_vessel_contrast, thin_vessels, vessel_contrast


def _lines(size: int = 80) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[20, 10:70] = 1          # 1 px wide: thin
    mask[35:37, 10:70] = 1       # 2 px wide: thin
    mask[50:56, 10:70] = 1       # 6 px wide: thick
    return mask


def _image(mask: np.ndarray, thin_value: float = 190.0, thick_value: float = 170.0, noise: float = 0.0,
           seed: int = 0) -> np.ndarray:
    """A flat background of 200 (plus Gaussian noise), thin vessels at `thin_value`, thick at `thick_value`."""
    green = 200.0 + noise * np.random.default_rng(seed).standard_normal(mask.shape)
    thin = thin_vessels(mask)
    green[thin] = thin_value
    green[(mask > 0) & ~thin] = thick_value
    return np.repeat(np.clip(green, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_thin_vessels_are_those_at_most_two_pixels_wide():
    thin = thin_vessels(_lines())
    assert thin[20, 10:70].all() and thin[35:37, 10:70].all()
    assert not thin[50:56, 10:70].any()


def test_contrast_is_one_minus_vessel_over_background():
    mask, fov = _lines(), np.ones((80, 80), np.uint8)
    flat = vessel_contrast(_image(mask), mask, fov)
    assert flat["contrast_thin"] == pytest.approx(0.05, abs=1e-6)
    assert flat["contrast_thick"] == pytest.approx(0.15, abs=1e-6)
    assert flat["background_roughness"] == pytest.approx(0.0, abs=1e-6)
    # A painter that leaves the thin vessels out: they have no contrast.
    undrawn = vessel_contrast(_image(mask, thin_value=200.0), mask, fov)
    assert undrawn["contrast_thin"] == pytest.approx(0.0, abs=1e-6)


def test_roughness_reads_the_background_noise_and_illumination_does_not_count():
    mask, fov = _lines(), np.ones((80, 80), np.uint8)
    noisy = vessel_contrast(_image(mask, noise=10.0), mask, fov)
    assert noisy["background_roughness"] == pytest.approx(10.0 / 200.0, rel=0.15)
    # A slow illumination ramp (x0.75 .. x1.0 across the image) is background, not texture or contrast.
    lit = _image(mask).astype(np.float64) * np.linspace(0.75, 1.0, 80)[None, :, None]
    ramp = vessel_contrast(lit.round().astype(np.uint8), mask, fov)
    assert ramp["background_roughness"] < 0.01
    assert ramp["contrast_thick"] == pytest.approx(0.15, abs=0.01)


def test_outside_the_fov_is_not_background():
    mask = _lines()
    fov = np.zeros((80, 80), np.uint8)
    fov[:, :60] = 1
    image = _image(mask)
    image[:, 60:] = 0  # black outside the FOV, as in a photograph
    inside = vessel_contrast(image, mask, fov)
    assert inside["background_roughness"] == pytest.approx(0.0, abs=1e-6)
    assert inside["contrast_thick"] == pytest.approx(0.15, abs=1e-6)


def test_the_set_mean_and_the_spread_between_images():
    mask, fov = _lines(), np.ones((80, 80), np.uint8)
    images = [_image(mask, thick_value=170.0), _image(mask, thick_value=150.0)]
    out = mean_vessel_contrast(images, [mask, mask], [fov, fov])
    assert out["contrast_thick"] == pytest.approx(0.20, abs=1e-6)
    assert out["contrast_thick_spread"] == pytest.approx(0.05, abs=1e-6)
    with pytest.raises(ValueError, match="vessel_contrast"):
        vessel_contrast(images[0][..., 0], mask, fov)


def test_a_class_no_image_has_is_none():
    thick_only = np.zeros((80, 80), np.uint8)
    thick_only[50:56, 10:70] = 1
    fov = np.ones((80, 80), np.uint8)
    out = mean_vessel_contrast([_image(thick_only)], [thick_only], [fov])
    assert out["contrast_thin"] is None and out["contrast_thick"] == pytest.approx(0.15, abs=1e-6)
