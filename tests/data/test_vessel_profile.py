"""The vessel ring profile on hand-made images whose rings and contrasts are known."""

import numpy as np
import pytest

from synthmed_lightning.data.vessel_profile import RINGS, VesselProfile, contrast_profile

SIZE = 96


def _bar() -> np.ndarray:
    """A vessel 8 px wide (rows 40-47) across most of the image: rings -1 .. -4 inside, +1, +2 outside."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[40:48, 8:88] = 1
    return mask


def _image(ring_contrast: dict[int, float], background: float = 200.0) -> np.ndarray:
    """A flat background with rows at a given contrast by ring (as `_bar`'s rows lie)."""
    green = np.full((SIZE, SIZE), background)
    rows = {-1: (40, 47), -2: (41, 46), -3: (42, 45), -4: (43, 44), 1: (39, 48), 2: (38, 49)}
    for ring, contrast in ring_contrast.items():
        for row in rows[ring]:
            green[row, 8:88] = background * (1 - contrast)
    return np.repeat(np.clip(np.rint(green), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


PHOTO = {-4: 0.30, -3: 0.25, -2: 0.20, -1: 0.10, 1: 0.015}
PAINTED = {-4: 0.25, -3: 0.25, -2: 0.22, -1: 0.15, 1: 0.06, 2: 0.02}  # wider and darker at the edge


def _fov() -> np.ndarray:
    return np.ones((SIZE, SIZE), np.uint8)


def test_profile_reads_each_rings_contrast():
    profile = contrast_profile(_image(PHOTO), _bar(), _fov())
    expected = [PHOTO.get(r, 0.0) for r in RINGS]
    # the background under a ring is averaged over the non-vessel pixels 2 px and more from the mask
    np.testing.assert_allclose(profile, expected, atol=0.01)


def _fitted(backgrounds=(200.0,)) -> VesselProfile:
    images = [_image(PHOTO, b) for b in backgrounds]
    return VesselProfile.fit(images, [_bar()] * len(images), [_fov()] * len(images), [SIZE] * len(images))


def test_apply_moves_a_painting_to_the_photographs_profile_and_leaves_the_background():
    model = _fitted()
    assert model.spread == pytest.approx(0.0, abs=1e-9)
    painting = _image(PAINTED)
    out = model.apply(painting, _bar(), _fov(), seed=0)
    before, after = (contrast_profile(x, _bar(), _fov()) for x in (painting, out))
    darkened = model.profile > 0.005  # ring +2 is flat in the photographs: left as painted
    assert np.abs(after - model.profile)[darkened].max() < 0.01 < np.abs(before - model.profile)[darkened].max()
    assert after[~darkened] == pytest.approx(before[~darkened], abs=1e-3)
    far = np.ones((SIZE, SIZE), bool)
    far[30:58] = False  # rows well away from the vessel's rings
    assert np.array_equal(out[far], painting[far])


def test_an_undrawn_ring_is_left_alone():
    """A painting without the vessel (contrast 0) is not given one: there is nothing to scale."""
    blank = _image({})
    assert np.array_equal(_fitted().apply(blank, _bar(), _fov(), seed=0), blank)


def test_darker_photographs_give_darker_targets_and_seeds_vary_the_scale():
    """Contrast that follows brightness (here: the same absolute depth on darker backgrounds) is kept
    as a line; the spread around it is drawn per seed, the same seed gives the same bytes."""
    depth = 30.0
    images = [_image({r: c * depth / (0.3 * b) for r, c in PHOTO.items()}, b) for b in (120.0, 160.0, 200.0, 240.0)]
    images[1] = _image({r: 1.1 * c * depth / (0.3 * 160.0) for r, c in PHOTO.items()}, 160.0)  # off the line
    model = VesselProfile.fit(images, [_bar()] * 4, [_fov()] * 4, [SIZE] * 4)
    assert model.slope < 0 and model.spread > 0
    dark, bright = _image(PAINTED, 120.0), _image(PAINTED, 240.0)
    assert model.scale(dark, _fov(), 0) > model.scale(bright, _fov(), 0)
    assert len({model.scale(dark, _fov(), seed) for seed in range(5)}) == 5
    np.testing.assert_array_equal(model.apply(dark, _bar(), _fov(), 3), model.apply(dark, _bar(), _fov(), 3))


def test_rings_scale_with_the_fov_diameter():
    """Painting at twice the photographs' FOV diameter: the rings are twice as wide."""
    model = _fitted()
    twice = lambda a: np.kron(a, np.ones((2, 1), a.dtype))[20:20 + SIZE]  # noqa: E731  rows stretched x2
    mask = twice(_bar())  # 16 px wide
    painting = np.repeat(twice(_image(PAINTED)[..., 1])[..., None], 3, axis=2)
    out = model.apply(painting, mask, _fov(), seed=0, fov_diameter=2 * SIZE)
    after = contrast_profile(out, mask, _fov(), scale=2.0)
    before = contrast_profile(painting, mask, _fov(), scale=2.0)
    assert np.abs(after - model.profile).max() < np.abs(before - model.profile).max()


def test_to_dict_round_trips_and_untrusted_values_are_refused():
    model = _fitted()
    again = VesselProfile.from_dict(model.to_dict())
    np.testing.assert_array_equal(again.profile, model.profile)
    assert again.to_dict() == model.to_dict()
    good = model.to_dict()
    for bad, message in (({**good, "format": "other"}, "not a vessel profile"),
                         ({**good, "rings": [1, 2]}, "rings"),
                         ({**good, "profile": [0.1] * (len(RINGS) - 1)}, "one finite value per ring"),
                         ({**good, "slope": float("nan")}, "finite"),
                         ({**good, "fov_diameter": 0.0}, "positive fov_diameter"),
                         ({k: v for k, v in good.items() if k != "spread"}, "missing"),
                         ("a string", "not a vessel profile")):
        with pytest.raises(ValueError, match=message):
            VesselProfile.from_dict(bad)


def test_photographs_without_thick_vessels_give_one_scale_for_all():
    thin = np.zeros((SIZE, SIZE), np.uint8)
    thin[40, 8:88] = 1
    image = _image({-1: 0.1})
    model = VesselProfile.fit([image] * 3, [thin] * 3, [_fov()] * 3, [SIZE] * 3)
    assert (model.slope, model.intercept, model.spread) == (0.0, 1.0, 0.0)
    VesselProfile.from_dict(model.to_dict())  # valid for a checkpoint


def test_fit_needs_a_mask_fov_and_diameter_per_image():
    with pytest.raises(ValueError, match="one mask, FOV and diameter per image"):
        VesselProfile.fit([_image(PHOTO)], [], [_fov()], [SIZE])
