"""Tests for the procedural fundus phantom (synthmed_lightning.data.phantom)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from synthmed_lightning.data.phantom import PhantomSample, make_phantom_dataset, render_phantom

H, W = 584, 565  # DRIVE geometry


@pytest.fixture(scope="module")
def full() -> list[PhantomSample]:
    """A few full-size (DRIVE-sized) phantoms, rendered once for the module."""
    return [render_phantom(seed, H, W) for seed in (0, 1, 2)]


def _f1(pred: np.ndarray, ref: np.ndarray) -> float:
    pred = pred.astype(bool)
    ref = ref.astype(bool)
    denom = pred.sum() + ref.sum()
    return float(2.0 * (pred & ref).sum() / denom) if denom else 1.0


def _relative_darkness(image: np.ndarray, kernel: int) -> np.ndarray:
    """Local darkening of the green channel w.r.t. a median-filtered background."""
    g = image[..., 1]
    bg = cv2.medianBlur(g, kernel).astype(np.float32)
    return (bg - g.astype(np.float32)) / np.maximum(bg, 1.0)


# --------------------------------------------------------------------------- #
# structure
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("hw", [(584, 565), (64, 64), (96, 96), (32, 32), (40, 72)])
def test_shapes_dtypes_and_value_sets(hw):
    h, w = hw
    s = render_phantom(3, h, w)
    assert isinstance(s, PhantomSample)
    assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (h, w) and s.mask.dtype == np.uint8
    assert s.fov.shape == (h, w) and s.fov.dtype == np.uint8
    assert set(np.unique(s.mask).tolist()) <= {0, 1}
    assert set(np.unique(s.fov).tolist()) == {0, 1}
    assert s.mask.any(), "every phantom must contain vessels"


def test_sample_is_frozen():
    s = render_phantom(0, 64, 64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.stem = "other"  # type: ignore[misc]


def test_stem_uses_index():
    assert render_phantom(5, 64, 64).stem == "phantom_0000"
    assert render_phantom(5, 64, 64, index=7).stem == "phantom_0007"
    assert render_phantom(5, 64, 64, index=1234).stem == "phantom_1234"


def test_rejects_tiny_sizes_and_negative_count():
    with pytest.raises(ValueError):
        render_phantom(0, 8, 64)
    with pytest.raises(ValueError):
        make_phantom_dataset(-1)


# --------------------------------------------------------------------------- #
# determinism
# --------------------------------------------------------------------------- #
def test_same_seed_is_identical(full):
    again = render_phantom(0, H, W)
    np.testing.assert_array_equal(again.image, full[0].image)
    np.testing.assert_array_equal(again.mask, full[0].mask)
    np.testing.assert_array_equal(again.fov, full[0].fov)


def test_index_only_changes_stem():
    a = render_phantom(11, 64, 64, index=0)
    b = render_phantom(11, 64, 64, index=3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.stem != b.stem


def test_different_seeds_differ(full):
    a, b = full[0], full[1]
    assert not np.array_equal(a.image, b.image)
    assert not np.array_equal(a.mask, b.mask)
    # not just noise: the vessel trees themselves differ substantially
    assert _f1(a.mask, b.mask) < 0.6


def test_does_not_touch_global_rng():
    np.random.seed(123)
    expected = np.random.random(4)
    np.random.seed(123)
    render_phantom(0, 64, 64)
    np.testing.assert_array_equal(np.random.random(4), expected)


def test_negative_and_huge_seeds_work():
    a = render_phantom(-1, 48, 48)
    b = render_phantom(2**80 + 5, 48, 48)
    assert a.mask.any() and b.mask.any()
    np.testing.assert_array_equal(a.image, render_phantom(-1, 48, 48).image)


# --------------------------------------------------------------------------- #
# dataset
# --------------------------------------------------------------------------- #
def test_dataset_stems_and_determinism():
    ds = make_phantom_dataset(3, seed=4, height=64, width=64)
    assert [s.stem for s in ds] == ["phantom_0000", "phantom_0001", "phantom_0002"]
    again = make_phantom_dataset(3, seed=4, height=64, width=64)
    for a, b in zip(ds, again):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)
    # samples within a dataset differ from each other
    assert not np.array_equal(ds[0].image, ds[1].image)
    assert not np.array_equal(ds[1].mask, ds[2].mask)


def test_dataset_seed_changes_samples():
    a = make_phantom_dataset(2, seed=0, height=64, width=64)
    b = make_phantom_dataset(2, seed=1, height=64, width=64)
    for sa, sb in zip(a, b):
        assert sa.stem == sb.stem
        assert not np.array_equal(sa.image, sb.image)


def test_dataset_prefix_is_stable_and_empty_ok():
    long = make_phantom_dataset(3, seed=9, height=48, width=48)
    short = make_phantom_dataset(2, seed=9, height=48, width=48)
    for a, b in zip(short, long):
        np.testing.assert_array_equal(a.image, b.image)
    assert make_phantom_dataset(0) == []


# --------------------------------------------------------------------------- #
# geometry: FOV and vessels
# --------------------------------------------------------------------------- #
def test_fov_is_centred_disc(full):
    fov = full[0].fov.astype(bool)
    area = fov.sum()
    diameter = 2.0 * np.sqrt(area / np.pi)
    assert diameter == pytest.approx(0.92 * min(H, W), rel=0.02)
    ys, xs = np.nonzero(fov)
    assert xs.mean() == pytest.approx((W - 1) / 2, abs=1.0)
    assert ys.mean() == pytest.approx((H - 1) / 2, abs=1.0)
    # the FOV is the same for every sample of a given size
    np.testing.assert_array_equal(full[0].fov, full[1].fov)


@pytest.mark.parametrize("hw", [(584, 565), (64, 64), (96, 96)])
def test_mask_inside_fov_and_outside_black(hw):
    s = render_phantom(8, *hw)
    fov = s.fov.astype(bool)
    assert not (s.mask.astype(bool) & ~fov).any()
    outside = s.image[~fov]
    assert outside.max() <= 5
    # inside is clearly lit
    assert s.image[fov].mean() > 40


def test_vessel_fraction_full_size(full):
    fracs = [s.mask[s.fov > 0].mean() for s in full]
    for f in fracs:
        assert 0.07 <= f <= 0.16, fracs
    assert 0.08 <= float(np.mean(fracs)) <= 0.14, fracs


@pytest.mark.parametrize("hw", [(64, 64), (96, 96), (32, 32)])
def test_small_images_have_vessels(hw):
    for seed in range(3):
        s = render_phantom(seed, *hw)
        frac = s.mask[s.fov > 0].mean()
        assert 0.0 < frac < 0.6, (hw, seed, frac)


def test_vessels_form_connected_trees(full):
    """Vessels grow from the optic disc: a few large components hold most pixels."""
    for s in full:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(s.mask, connectivity=8)
        sizes = np.sort(stats[1:, cv2.CC_STAT_AREA])[::-1]
        assert sizes[:3].sum() >= 0.6 * s.mask.sum()


def test_vessels_have_a_range_of_widths(full):
    """Tapering: the distance transform shows thick trunks and thin capillaries."""
    s = full[0]
    dist = cv2.distanceTransform(s.mask, cv2.DIST_L2, 5)
    assert dist.max() >= 3.0  # trunk ~8 px wide
    # thin vessels: many vessel pixels are at most ~1 px from the background
    skel_like = (dist > 0) & (dist <= 1.0)
    assert skel_like.sum() >= 0.3 * s.mask.sum()


# --------------------------------------------------------------------------- #
# appearance: colour and mask / image agreement
# --------------------------------------------------------------------------- #
def test_fundus_colour(full):
    for s in full:
        fov = s.fov.astype(bool)
        r, g, b = (s.image[..., c][fov].astype(np.float64).mean() for c in range(3))
        assert r > g > b, (r, g, b)
        assert r > 100 and b < 80


def test_vessels_darker_strongest_in_green(full):
    for s in full:
        fov = s.fov.astype(bool)
        ves = s.mask.astype(bool)
        bg = fov & ~ves
        img = s.image.astype(np.float64)
        rel = [(img[..., c][bg].mean() - img[..., c][ves].mean()) / img[..., c][bg].mean() for c in range(3)]
        assert rel[1] > 0.15, rel  # clearly darker in green
        assert rel[1] > rel[0], rel  # green contrast beats red


@pytest.mark.parametrize("hw", [(64, 64), (96, 96)])
def test_vessels_darker_small(hw):
    s = render_phantom(1, *hw)
    g = s.image[..., 1].astype(np.float64)
    bg = s.fov.astype(bool) & ~s.mask.astype(bool)
    assert g[s.mask.astype(bool)].mean() < 0.9 * g[bg].mean()


def test_threshold_on_darkness_recovers_mask(full):
    """The painted vessels and the mask agree: a fixed threshold on the local
    green darkening reproduces the mask with high F1."""
    for s in full:
        rel = _relative_darkness(s.image, 25)
        pred = (rel > 0.1) & s.fov.astype(bool)
        assert _f1(pred, s.mask) > 0.85


def test_mask_does_not_match_other_image(full):
    """Sanity check of the F1 test above: the mask of another seed does not fit."""
    rel = _relative_darkness(full[0].image, 25)
    pred = (rel > 0.1) & full[0].fov.astype(bool)
    assert _f1(pred, full[1].mask) < 0.4


def test_optic_disc_and_fovea(full):
    """A bright yellowish disc left or right of centre, a dark fovea near the centre."""
    radius = 0.46 * min(H, W)
    yy, xx = np.mgrid[0:H, 0:W]
    rc = np.hypot(xx - (W - 1) / 2, yy - (H - 1) / 2)
    for s in full:
        fov = s.fov.astype(bool)
        img = s.image.astype(np.float32)
        lum = cv2.GaussianBlur(img.mean(axis=2), (0, 0), 8)
        lum[~fov] = 0
        dy, dx = np.unravel_index(np.argmax(lum), lum.shape)
        assert abs(dx - (W - 1) / 2) > 0.3 * radius  # disc off-centre horizontally
        r, g, b = img[dy, dx]
        assert r > 180 and g > 140 and g > b + 20  # bright, yellowish
        # fovea: darkest (blurred green) spot of the central region, on the
        # other side of the centre than the disc
        green = cv2.GaussianBlur(img[..., 1], (0, 0), 10)
        green[rc > 0.5 * radius] = 255
        fy, fx = np.unravel_index(np.argmin(green), green.shape)
        assert np.hypot(fx - (W - 1) / 2, fy - (H - 1) / 2) < 0.35 * radius
        assert abs(fx - dx) > 0.45 * radius


def test_disc_side_varies():
    sides = set()
    for seed in range(12):
        s = render_phantom(seed, 96, 96)
        lum = cv2.GaussianBlur(s.image.astype(np.float32).mean(axis=2), (0, 0), 2)
        _, x = np.unravel_index(np.argmax(lum), lum.shape)
        sides.add(bool(x > 48))
    assert sides == {True, False}
