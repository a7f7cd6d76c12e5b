"""EdgeFade: vessels end short of the FOV's edge at the depths the real masks' end at."""

import cv2
import numpy as np
import pytest

from synthmed_lightning.data.edge_fade import BAND, EdgeFade, edge_depths


def _radial_vessels(size: int = 200, stop: float = 0.0, count: int = 12, width: int = 1):
    """(mask, fov): `count` radial vessels from the centre of a disc FOV, ending `stop` px short of its edge."""
    fov = np.zeros((size, size), np.uint8)
    centre, radius = size // 2, size // 2 - 4
    cv2.circle(fov, (centre, centre), radius, 1, -1)
    mask = np.zeros_like(fov)
    for angle in np.linspace(0, 2 * np.pi, count, endpoint=False):
        reach = radius - stop
        end = (round(centre + reach * np.cos(angle)), round(centre + reach * np.sin(angle)))
        cv2.line(mask, (centre, centre), end, 1, width)
    return mask & fov, fov


def _distance(fov):
    return cv2.distanceTransform(np.pad(fov, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]


def test_vessels_end_where_the_real_ones_end_and_nothing_further_in_changes():
    real = [_radial_vessels(stop=4.0)[0]] * 3
    fov = _radial_vessels()[1]
    fade = EdgeFade.fit(real, [fov] * 3)
    assert np.all((fade.depths > 3.5) & (fade.depths < 6.5))  # every real vessel stops ~4 px in
    reaching, _ = _radial_vessels(stop=0.0, width=3)
    assert edge_depths(reaching, fov).max() <= 1.0  # before: every vessel touches the edge
    faded = fade.apply(reaching, fov, np.random.default_rng(0))
    assert faded.dtype == reaching.dtype
    distance = _distance(fov)
    assert edge_depths(faded, fov).min() >= fade.depths[0] - 0.5
    assert np.array_equal(faded[distance > BAND], reaching[distance > BAND])  # beyond the band: untouched
    assert not (faded & ~reaching.astype(bool)).any()  # it only clears


def test_depths_are_drawn_per_vessel_from_the_real_spread_and_repeat_with_the_generator():
    fov = _radial_vessels()[1]
    real = [_radial_vessels(stop=s)[0] for s in (0.0, 2.0, 4.0, 6.0)]
    fade = EdgeFade.fit(real, [fov] * len(real))
    reaching, _ = _radial_vessels(stop=0.0, count=24, width=3)
    depths = edge_depths(fade.apply(reaching, fov, np.random.default_rng(1)), fov)
    assert depths.size == 24 and depths.max() - depths.min() > 3.0  # vessels end at several depths
    again = fade.apply(reaching, fov, np.random.default_rng(1))
    assert np.array_equal(again, fade.apply(reaching, fov, np.random.default_rng(1)))


def test_depths_scale_with_the_fov_diameter():
    fade = EdgeFade.fit([_radial_vessels(size=200, stop=4.0)[0]], [_radial_vessels(size=200)[1]])
    large, large_fov = _radial_vessels(size=400, stop=0.0, width=3)
    faded = fade.apply(large, large_fov, np.random.default_rng(0))
    scale = 393 / 193  # the FOVs' diameters
    assert np.median(edge_depths(faded, large_fov, band=2 * BAND)) == pytest.approx(scale * np.median(fade.depths), abs=1)


def test_no_vessel_near_any_edge_cannot_be_fitted():
    mask, fov = _radial_vessels(stop=30.0)
    with pytest.raises(ValueError, match="no vessel"):
        EdgeFade.fit([mask], [fov])


def test_from_dict_refuses_what_this_version_did_not_write():
    fade = EdgeFade.fit([_radial_vessels(stop=3.0)[0]], [_radial_vessels()[1]])
    again = EdgeFade.from_dict(fade.to_dict())
    assert np.array_equal(again.depths, fade.depths) and again.fov_diameter == fade.fov_diameter
    for broken, message in (({"format": "other"}, "not an edge fade"),
                            ({**fade.to_dict(), "depths": "x"}, "malformed"),
                            ({**fade.to_dict(), "depths": fade.depths[::-1].tolist()}, "non-decreasing"),
                            ({**fade.to_dict(), "depths": [*fade.depths[:-1], BAND + 1]}, "within"),
                            ({**fade.to_dict(), "fov_diameter": float("nan")}, "positive")):
        with pytest.raises(ValueError, match=message):
            EdgeFade.from_dict(broken)


def test_drive_annotators_end_vessels_short_of_the_edge(drive_root):
    from synthmed_lightning.data.readers import read_dataset

    samples = read_dataset({"name": "drive", "root": str(drive_root)}, "train")
    fade = EdgeFade.fit([s.mask > 0 for s in samples], [s.fov > 0 for s in samples])
    assert 1.5 < np.median(fade.depths) < 4.0
    # A mask whose vessels all reach the edge (the real ones, grown outwards) ends them as the real ones end.
    sample = samples[0]
    fov = (sample.fov > 0).astype(np.uint8)
    reaching = (cv2.dilate((sample.mask > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) & fov)
    before, after = edge_depths(reaching, fov), edge_depths(fade.apply(reaching, fov, np.random.default_rng(0)), fov)
    assert np.median(before) <= 1.0 and np.median(after) >= 1.4
