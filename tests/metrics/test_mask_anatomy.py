"""Anatomy statistics of vessel masks on hand-made masks with known answers, and on DRIVE."""

import cv2
import numpy as np
import pytest
import torch

from synthmed_lightning.metrics.mask_stats import (HEADLINE_KEYS, anatomy_halves, anatomy_statistics, compare_anatomy,
                                                   locate_disc, mask_anatomy, per_mask_anatomy, skeleton,
                                                   skeleton_points, vessel_widths, width_quantile)


def _canvas(h=128, w=128):
    return np.zeros((h, w), np.uint8)


def _line(mask, p0, p1, width):
    cv2.line(mask, (round(p0[0]), round(p0[1])), (round(p1[0]), round(p1[1])), 1, width)
    return mask


def _parallel_lines(angle_deg, count=7, width=1, size=256):
    """`count` parallel lines at `angle_deg` (counter-clockwise from horizontal, as displayed)."""
    mask = _canvas(size, size)
    c = size / 2.0
    dx, dy = np.cos(np.radians(angle_deg)), -np.sin(np.radians(angle_deg))
    for offset in np.linspace(-0.25 * size, 0.25 * size, count):
        ox, oy = c - dy * offset, c + dx * offset
        _line(mask, (ox - 0.4 * size * dx, oy - 0.4 * size * dy), (ox + 0.4 * size * dx, oy + 0.4 * size * dy), width)
    return mask > 0


@pytest.mark.parametrize("width", [1, 3])
def test_plus_sign_has_one_branch_point_and_four_ends(width):
    mask = _canvas(64, 64)
    _line(mask, (8, 32), (56, 32), width)
    _line(mask, (32, 8), (32, 56), width)
    branch, ends, _ = skeleton_points(skeleton(mask > 0))
    assert (branch, ends) == (1, 4)
    stats = anatomy_statistics(mask[None])
    assert stats["branch_points"] == 1.0 and stats["end_points"] == 4.0


def test_skeleton_of_bars_and_rings():
    bar = np.zeros((40, 80), bool)
    bar[15:22, 5:75] = True
    skel = skeleton(bar)
    assert skel.sum() > 50 and skel.sum(axis=0).max() == 1  # one pixel wide
    assert skeleton_points(skel)[:2] == (0, 2)
    ring = _canvas(80, 80)
    cv2.circle(ring, (40, 40), 25, 1, 3)
    assert skeleton_points(skeleton(ring > 0))[:2] == (0, 0)  # a loop: no branch, no end


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 6, 9])
def test_widths_of_horizontal_bands_are_exact(width):
    mask = np.zeros((40, 80), bool)
    mask[10:10 + width, 5:75] = True
    widths = vessel_widths(mask, skeleton(mask))
    np.testing.assert_allclose(widths, width)


def test_width_histogram_and_thin_fraction():
    thin = np.zeros((40, 120), bool)
    thin[20, 5:115] = True
    thick = np.zeros((40, 120), bool)
    thick[18:23, 5:115] = True
    a, b = mask_anatomy(thin), mask_anatomy(thick)
    assert a["width_hist/1"] == 1.0 and a["thin_fraction"] == 1.0
    assert b["width_hist/4-5"] == 1.0 and b["thin_fraction"] == 0.0
    for stats in (a, b):
        assert sum(v for k, v in stats.items() if k.startswith("width_hist/")) == pytest.approx(1.0)
    both = anatomy_statistics(np.stack([thin, thick]))
    assert both["thin_fraction"] == pytest.approx(0.5)


def test_width_quantile_weighs_vessels_by_length():
    """A 9 px trunk 40 px long and 3 px branches 160 px long (in two masks of different sizes): a fifth
    of the centre line is 9 px wide, so quantiles up to 0.75 read 3 px and 0.85 or more 9 px."""
    trunk = np.zeros((40, 60), bool)
    trunk[10:19, 10:50] = True
    branches = np.zeros((60, 100), bool)
    branches[10:13, 10:90] = branches[40:43, 10:90] = True
    assert width_quantile([trunk, branches], 0.75) == pytest.approx(3.0, abs=0.01)
    assert width_quantile([trunk, branches], 0.85) == pytest.approx(9.0, abs=0.01)
    outside = np.zeros((40, 60), bool)
    outside[:, :25] = True
    assert width_quantile([trunk, branches], 0.85, [~outside, np.ones_like(branches)]) == pytest.approx(3.0, abs=0.5)
    assert np.isnan(width_quantile([np.zeros((8, 8), bool)], 0.95))
    with pytest.raises(ValueError, match="quantile=0"):
        width_quantile([trunk], 0.0)


@pytest.mark.parametrize("angle, key", [(0, "0"), (45, "45"), (22.5, "22.5"), (90, "90"), (135, "135")])
def test_parallel_lines_have_one_orientation_and_a_large_bias(angle, key):
    stats = mask_anatomy(_parallel_lines(angle))
    assert stats[f"orientation_hist/{key}"] > 0.9
    assert stats["orientation_bias"] > 0.9
    assert sum(v for k, v in stats.items() if k.startswith("orientation_hist/")) == pytest.approx(1.0)


def test_evenly_spread_directions_and_circles_have_a_small_bias():
    star = np.zeros((256, 256), bool)
    for angle in np.arange(8) * 22.5:
        star |= _parallel_lines(angle, count=3)
    stats = mask_anatomy(star)
    assert stats["orientation_bias"] < 0.05
    assert max(v for k, v in stats.items() if k.startswith("orientation_hist/")) < 0.2
    circles = _canvas(256, 256)
    for radius in range(10, 125, 12):
        cv2.circle(circles, (128, 128), radius, 1, 1)
    assert mask_anatomy(circles > 0)["orientation_bias"] < 0.05


def test_a_diagonal_bias_is_seen():
    lines = _parallel_lines(45, count=5) | _parallel_lines(0, count=2) | _parallel_lines(90, count=2)
    stats = mask_anatomy(lines)
    assert stats["orientation_hist/45"] > 0.4 and stats["orientation_bias"] > 0.3


def test_disc_found_where_the_vessels_radiate_from():
    size, centre = 400, (130, 210)
    mask = _canvas(size, size)
    for angle in np.arange(0, 360, 20):
        end = (centre[0] + 400 * np.cos(np.radians(angle)), centre[1] + 400 * np.sin(np.radians(angle)))
        _line(mask, centre, end, 3)
    fov = _canvas(size, size)
    cv2.circle(fov, (200, 200), 190, 1, -1)
    x, y = locate_disc(mask > 0, fov > 0)
    assert np.hypot(x - centre[0], y - centre[1]) <= 3
    stats = anatomy_statistics(mask[None], fov)
    # FOV centre ~(200, 200), radius ~190: the disc is ~73 px off centre
    assert stats["disc_offset"] == pytest.approx(np.hypot(70, 10) / 190.5, abs=0.03)
    rings = [stats[f"radial/{10 * k}-{10 * k + 10}"] for k in range(10)]
    assert rings[0] > 0.5 and all(np.diff(rings) <= 1e-9)  # density falls away from the disc
    assert stats["vessel_fraction"] > 0 and stats["components"] == 1.0


def test_vessels_outside_the_fov_are_ignored_and_inputs_are_flexible():
    mask = _canvas(64, 64)
    _line(mask, (8, 32), (56, 32), 1)
    _line(mask, (32, 8), (32, 56), 1)
    fov = np.zeros((64, 64), np.uint8)
    fov[:, :33] = 1  # cuts off the right arm: a T junction, 3 ends
    stats = anatomy_statistics(mask[None] * 255, fov)
    assert (stats["branch_points"], stats["end_points"]) == (1.0, 3.0)
    from_torch = anatomy_statistics(torch.from_numpy(mask[None, None]).float(), torch.from_numpy(fov))
    assert from_torch == stats
    assert set(HEADLINE_KEYS) <= set(stats)


def test_compare_anatomy():
    real = anatomy_statistics(_parallel_lines(0)[None])
    same = compare_anatomy(real, real)
    assert all(v == 0.0 for k, v in same.items() if not np.isnan(v))
    assert same["width_hist"] == 0.0 and same["orientation_hist"] == 0.0
    other = anatomy_statistics(_parallel_lines(90, count=14)[None])
    diff = compare_anatomy(other, real)
    assert diff["orientation_hist"] == pytest.approx(1.0)  # disjoint histograms
    assert diff["skeleton_length"] == pytest.approx(1.0, abs=0.1)  # twice the lines
    assert diff["end_points"] == pytest.approx(1.0)


def test_real_halves_are_zero_apart_for_alike_masks_and_apart_as_often_as_splits_separate_kinds():
    alike = per_mask_anatomy(np.stack([_parallel_lines(0)] * 4))
    assert all(v == 0.0 for v in anatomy_halves(alike).values() if not np.isnan(v))
    # Horizontal and vertical lines, two of each: a split into halves of two keeps one kind per half in
    # 2 of its 6 ways (orientation histograms disjoint, distance 1), else both halves hold one of each (0).
    mixed = per_mask_anatomy(np.stack([_parallel_lines(0), _parallel_lines(90)] * 2))
    halves = anatomy_halves(mixed, splits=600)
    assert halves["orientation_hist"] == pytest.approx(1 / 3, abs=0.05)
    assert halves["skeleton_length"] == pytest.approx(0.0, abs=1e-9)  # same length of line either way


def test_a_drive_sized_phantom_mask_has_branches_and_thin_vessels():
    # (its cost per mask is benchmarks/postprocess_cost.py's)
    from synthmed_lightning.data.phantom import render_phantom

    sample = render_phantom(3)
    stats = anatomy_statistics(sample.mask[None], sample.fov)
    assert stats["branch_points"] > 10 and 0.0 < stats["thin_fraction"] < 1.0


def test_drive_masks_have_plausible_anatomy(drive_root):
    from synthmed_lightning.data.readers import read_dataset

    samples = read_dataset({"name": "drive", "root": str(drive_root)}, "train")[:4]
    per_mask = [mask_anatomy(s.mask > 0, s.fov > 0) for s in samples]
    print("\nDRIVE training masks:")
    for sample, stats in zip(samples, per_mask):
        print(f"  {sample.stem}: " + ", ".join(f"{k} {stats[k]:.3g}" for k in HEADLINE_KEYS))
        assert 50 <= stats["branch_points"] <= 400
        assert 0.2 <= stats["thin_fraction"] <= 0.9
        assert stats["orientation_bias"] < 0.35
        assert 0.3 < stats["disc_offset"] < 0.95  # the disc is well off centre in DRIVE
    average = anatomy_statistics(np.stack([s.mask for s in samples]), np.stack([s.fov for s in samples]))
    print("  mean: " + ", ".join(f"{k} {v:.3g}" for k, v in average.items()))
    assert average["orientation_bias"] < 0.25
    assert average["radial/0-10"] > average["radial/50-60"]  # vessels crowd at the disc
    assert 5 <= width_quantile([s.mask for s in samples], 0.95, [s.fov for s in samples]) <= 9  # 7.0 on all 20
