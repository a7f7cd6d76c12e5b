"""The photographic nuisance model: fitting recovers known statistics, applying reaches its targets."""

import json

import cv2
import numpy as np
import pytest

from synthmed_lightning.data.nuisance import (BAND_SIGMAS, NuisanceModel, band_energies, edge_blur, measure)
from synthmed_lightning.data.phantom import make_phantom_dataset

FINE = (0, 1)  # bands of the fine group (noise, ~1-2 px)


@pytest.fixture(scope="module")
def phantoms():
    return make_phantom_dataset(3, seed=11)


def _noisy(sample, std: float, seed: int) -> np.ndarray:
    """The phantom with Gaussian noise of `std` grey levels added inside its FOV."""
    rng = np.random.default_rng(seed)
    image = np.clip(np.rint(sample.image + rng.normal(0.0, std, sample.image.shape)), 0, 255).astype(np.uint8)
    image[sample.fov == 0] = 0
    return image


def _model_for(stats: dict, energy_factor=3.0, **overrides) -> NuisanceModel:
    """A model whose every target is `stats` (one image's `measure`), its band energies times
    `energy_factor`, without spread: draws are then exactly these targets."""
    values = {
        "log_energy_mean": np.log(stats["band_energy"] * energy_factor), "log_energy_std": np.zeros((3, 7)),
        "band_corr": stats["band_corr"], "falloff_mean": stats["falloff"], "falloff_std": np.zeros(3),
        "unevenness_mean": stats["unevenness"], "unevenness_std": np.zeros(3),
        "edge_blur_mean": stats["edge_blur"], "edge_blur_std": 0.0, "fov_diameter": stats["fov_diameter"], "count": 1,
    }
    values.update(overrides)
    return NuisanceModel(**values)


def _green_contrast(image, sample) -> float:
    green = image[..., 1].astype(np.float64)
    vessels = sample.mask > 0
    background = (sample.fov > 0) & ~vessels
    return green[background].mean() - green[vessels].mean()


def test_fit_reads_added_noise_monotonically_and_at_its_known_energy(phantoms):
    fovs, masks = [p.fov for p in phantoms], [p.mask for p in phantoms]
    fine, noise_energy = [], []
    for std in (0.0, 2.0, 4.0, 8.0):
        model = NuisanceModel.fit([_noisy(p, std, i) for i, p in enumerate(phantoms)], fovs, masks)
        fine.append(model.band_energy[1, 0])
        # white noise of variance v adds v / (I + 1)^2 to the log image, and 1 - 2 g(0) + sum g^2
        # = 0.761 of that passes band 0 (the image minus its Gaussian blur at 1 px)
        inverse = np.mean([np.mean(1.0 / (p.image[..., 1][(p.fov > 0) & (p.mask == 0)] + 1.0) ** 2) for p in phantoms])
        noise_energy.append(0.761 * std**2 * inverse)
    assert np.all(np.diff(fine) > 0), fine
    for measured, expected in zip(np.array(fine[1:]) - fine[0], noise_energy[1:]):
        assert measured == pytest.approx(expected, rel=0.15)


def test_edge_blur_adds_in_quadrature(phantoms):
    sample = phantoms[0]
    sharp = edge_blur(sample.image, sample.fov)
    assert 0.5 < sharp < 1.6
    for sigma in (1.0, 2.0):
        blurred = cv2.GaussianBlur(sample.image, (0, 0), sigma)
        assert edge_blur(blurred, sample.fov) == pytest.approx(np.hypot(sharp, sigma), rel=0.15)


def test_measure_without_a_mask_estimates_the_vessels(phantoms):
    sample = phantoms[0]
    with_mask = band_energies(sample.image, sample.fov, sample.mask)
    without = band_energies(sample.image, sample.fov)
    assert with_mask.shape == (3, len(BAND_SIGMAS))
    assert np.all((without / with_mask > 0.5) & (without / with_mask < 2.0))


def test_apply_then_fit_again_reaches_the_target(phantoms):
    fovs, masks = [p.fov for p in phantoms], [p.mask for p in phantoms]
    clean = NuisanceModel.fit([p.image for p in phantoms], fovs, masks)
    values = clean.to_dict()
    # a target three times the clean paintings' energy in every band, without spread
    values.update(log_energy_mean=(clean.log_energy_mean + np.log(3.0)).tolist(),
                  log_energy_std=np.zeros((3, 7)).tolist(), falloff_std=[0.0] * 3,
                  unevenness_std=[0.0] * 3, edge_blur_std=0.0)
    model = NuisanceModel.from_dict(values)
    outputs = [(model.apply(p.image, p.fov, seed, mask=p.mask), p.fov, p.mask) for p in phantoms for seed in (0, 1)]
    again = NuisanceModel.fit(*zip(*outputs))
    ratios = again.band_energy / model.band_energy
    assert np.all((ratios > 1 / 1.5) & (ratios < 1.5)), ratios
    np.testing.assert_allclose(again.falloff_mean, model.falloff_mean, atol=0.05)


def test_apply_adds_little_to_a_painting_that_has_the_texture_already(phantoms):
    sample = phantoms[1]
    stats = measure(sample.image, sample.fov, sample.mask)
    model = _model_for(stats, energy_factor=0.5)  # every band of the painting is above the target
    out = model.apply(sample.image, sample.fov, 3, mask=sample.mask)
    ratios = band_energies(out, sample.fov, sample.mask) / stats["band_energy"]
    assert np.all((ratios > 0.9) & (ratios < 1.2)), ratios
    inside = sample.fov > 0
    assert np.abs(out[inside].astype(int) - sample.image[inside]).mean() < 1.0
    # a partial deficit gets partly filled: more texture to a cleaner painting
    textured = _model_for(stats, energy_factor=1.5).apply(sample.image, sample.fov, 3, mask=sample.mask)
    rough = _model_for(stats, energy_factor=3.0).apply(sample.image, sample.fov, 3, mask=sample.mask)
    assert (band_energies(textured, sample.fov, sample.mask)[1, FINE].sum()
            < band_energies(rough, sample.fov, sample.mask)[1, FINE].sum())


def test_apply_gives_the_drawn_falloff(phantoms):
    sample = phantoms[0]
    stats = measure(sample.image, sample.fov, sample.mask)
    for falloff in (np.array([0.0, -0.1, -0.1]), stats["falloff"] + 0.2):
        model = _model_for(stats, energy_factor=1.0, falloff_mean=falloff)
        after = measure(model.apply(sample.image, sample.fov, 0, mask=sample.mask), sample.fov, sample.mask)
        np.testing.assert_allclose(after["falloff"], falloff, atol=0.05)


@pytest.mark.parametrize("energy_factor, blur_change", [(3.0, 0.0), (2.0, 0.3), (2.0, -0.3)])
def test_vessel_contrast_survives(phantoms, energy_factor, blur_change):
    # texture two or three times the phantom's own (its blotches alone are ~3x DRIVE's), alone,
    # with the most blur apply adds, and with the most sharpening
    for sample in phantoms[:2]:
        stats = measure(sample.image, sample.fov, sample.mask)
        model = _model_for(stats, energy_factor, edge_blur_mean=stats["edge_blur"] + blur_change)
        before = _green_contrast(sample.image, sample)
        for seed in range(3):
            after = _green_contrast(model.apply(sample.image, sample.fov, seed, mask=sample.mask), sample)
            assert abs(after / before - 1.0) < 0.25, (after, before)


def test_apply_is_deterministic_black_outside_and_scaled_by_strength(phantoms):
    sample = phantoms[2]
    model = _model_for(measure(sample.image, sample.fov, sample.mask), energy_factor=3.0)
    junk = sample.image.copy()
    junk[sample.fov == 0] = 77  # whatever lies outside the FOV must not come back
    first = model.apply(junk, sample.fov, 5)
    assert first.dtype == np.uint8 and first.shape == sample.image.shape
    assert first.tobytes() == model.apply(junk, sample.fov, 5).tobytes()
    assert first.tobytes() != model.apply(junk, sample.fov, 6).tobytes()
    assert not first[sample.fov == 0].any()
    unchanged = model.apply(junk, sample.fov, 5, strength=0.0)
    np.testing.assert_array_equal(unchanged[sample.fov > 0], sample.image[sample.fov > 0])
    assert not unchanged[sample.fov == 0].any()
    half = band_energies(model.apply(sample.image, sample.fov, 5, strength=0.5), sample.fov, sample.mask)
    full = band_energies(first, sample.fov, sample.mask)
    assert half[1, FINE].sum() < full[1, FINE].sum()
    with pytest.raises(ValueError):
        model.apply(sample.image, sample.fov, 5, strength=-1.0)


def test_json_round_trip_and_refusals(phantoms):
    model = NuisanceModel.fit([p.image for p in phantoms], [p.fov for p in phantoms], [p.mask for p in phantoms])
    values = model.to_dict()
    text = json.dumps(values, allow_nan=False)
    again = NuisanceModel.from_dict(json.loads(text))
    assert again.to_dict() == values
    sample = phantoms[0]
    assert again.apply(sample.image, sample.fov, 9).tobytes() == model.apply(sample.image, sample.fov, 9).tobytes()
    with pytest.raises(ValueError, match="format"):
        NuisanceModel.from_dict({**values, "format": "something-else"})
    with pytest.raises(ValueError):
        NuisanceModel.from_dict({**values, "edge_blur_std": float("nan")})
    with pytest.raises(ValueError):
        NuisanceModel.from_dict({k: v for k, v in values.items() if k != "falloff_mean"})
    with pytest.raises(ValueError):
        NuisanceModel.from_dict({**values, "log_energy_mean": [1.0, 2.0]})


def test_drive_fit_and_restoring_a_smoothed_image(drive_root):
    from synthmed_lightning.data.readers import read_dataset

    samples = read_dataset({"name": "drive", "root": str(drive_root)}, "train")[:4]
    model = NuisanceModel.fit_samples(samples)
    values = model.to_dict()
    json.dumps(values, allow_nan=False)  # every number finite
    print("\nDRIVE nuisance model (4 training images):")
    print("  band energy (geometric mean; rows R, G, B; bands", BAND_SIGMAS, "px):")
    for row in model.band_energy:
        print("   ", " ".join(f"{v:.2e}" for v in row))
    print("  ", {k: round(v, 6) for k, v in model.summary().items()})
    assert np.all(model.band_energy > 0) and 0.3 < model.edge_blur_mean < 3.0

    sample = samples[0]
    smoothed = cv2.GaussianBlur(sample.image, (0, 0), 3)
    original = band_energies(sample.image, sample.fov, sample.mask)[1, FINE].sum()
    assert band_energies(smoothed, sample.fov, sample.mask)[1, FINE].sum() < 0.1 * original
    restored = np.mean([band_energies(model.apply(smoothed, sample.fov, seed, mask=sample.mask),
                                      sample.fov, sample.mask)[1, FINE].sum() for seed in range(3)])
    print(f"  fine-band energy (G) of {sample.stem}: original {original:.2e}, restored {restored:.2e}")
    assert 0.5 < restored / original < 2.0
    before = _green_contrast(sample.image, sample)
    after = _green_contrast(model.apply(sample.image, sample.fov, 0, mask=sample.mask), sample)
    assert abs(after / before - 1.0) < 0.25
