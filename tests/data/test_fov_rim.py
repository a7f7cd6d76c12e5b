"""The FOV rim profile on hand-made images whose edge is known, and on DRIVE's photographs."""

import numpy as np
import pytest

from synthmed_lightning.data.fov_rim import RING_COUNT, FovRim, _edge_distance, rim_profile

SIZE = 240


def _fov(radius: float = 110.0) -> np.ndarray:
    rows, cols = np.indices((SIZE, SIZE))
    return (np.hypot(rows - SIZE / 2, cols - SIZE / 2) <= radius).astype(np.uint8)


def _image(edge_width: float, fov: np.ndarray, level=(180.0, 120.0, 60.0)) -> np.ndarray:
    """Flat colour inside the FOV, darkening linearly to 20 % over `edge_width` px at its edge."""
    distance = _edge_distance(fov, 1.0)
    ramp = np.clip(0.2 + 0.8 * (distance - 1) / max(edge_width, 1e-6), 0.2, 1.0) * (fov > 0)
    return np.clip(np.rint(ramp[..., None] * np.array(level)), 0, 255).astype(np.uint8)


PHOTO, PAINTING = 2.0, 24.0   # a sharp step, a soft fall-off


def test_fit_reads_the_step_and_apply_moves_a_soft_edge_to_it():
    fov = _fov()
    model = FovRim.fit([_image(PHOTO, fov)] * 3, [fov] * 3, [221.0] * 3)
    assert (model.profile[0] < 0.3).all() and model.profile[4] == pytest.approx(1.0, abs=0.01)  # ring 0 holds d 1 and 1.4
    painting = _image(PAINTING, fov, level=(150.0, 100.0, 80.0))
    out = model.apply(painting, fov)
    before, after = rim_profile(painting, fov), rim_profile(out, fov)
    outer = slice(0, RING_COUNT - 12)  # the innermost rings fade the correction out
    assert np.abs(after[outer] - model.profile[outer]).max() < 0.03 < np.abs(before[outer] - model.profile[outer]).max()
    beyond = _edge_distance(fov, 1.0) >= RING_COUNT + 0.5
    assert np.array_equal(out[beyond], painting[beyond]) and np.array_equal(out[fov == 0], painting[fov == 0])
    assert np.array_equal(model.apply(painting, fov), out)  # deterministic


def test_rings_scale_with_the_fov_diameter():
    """A rim fitted on 221 px FOVs, applied to a painting whose FOV is half as wide, corrects half as
    many px: the painting's step is as sharp relative to its size."""
    model = FovRim.fit([_image(PHOTO, _fov())], [_fov()], [221.0])
    small = _fov(55.0)
    out = model.apply(_image(PAINTING / 2, small), small, fov_diameter=110.5)
    after = rim_profile(out, small, scale=0.5)
    # ring 0 (0.5-1.5 photograph px) holds no pixel at half the size: the outermost are ring 1
    assert after is not None and np.nanmax(np.abs(after[1:8] - model.profile[1:8])) < 0.08  # NaN: a ring no pixel falls in


def test_a_fov_too_small_is_refused_by_fit_and_left_alone_by_apply():
    tiny = _fov(60.0)  # radius under twice the 32 rings and 16 px band: they would be the whole FOV
    with pytest.raises(ValueError, match="large enough"):
        FovRim.fit([_image(PHOTO, tiny)], [tiny], [121.0])
    model = FovRim.fit([_image(PHOTO, _fov())], [_fov()], [221.0])
    painting = _image(PAINTING, tiny)
    assert np.array_equal(model.apply(painting, tiny, fov_diameter=221.0), painting)


def test_dict_round_trip_and_untrusted_values_refused():
    model = FovRim.fit([_image(PHOTO, _fov())], [_fov()], [221.0])
    again = FovRim.from_dict(model.to_dict())
    np.testing.assert_array_equal(again.profile, model.profile)
    bad = model.to_dict()
    for key, value in [("format", "other"), ("rings", 8), ("profile", [[1.0, 1.0]]), ("fov_diameter", -1),
                       ("profile", [[float("nan")] * 3] * RING_COUNT)]:
        with pytest.raises(ValueError):
            FovRim.from_dict({**bad, key: value})


def test_drive_photographs_end_in_a_sharp_step(drive_root):
    from synthmed_lightning.data.readers import read_dataset

    samples = read_dataset({"name": "drive", "root": str(drive_root)}, "train")[:4]
    model = FovRim.fit_samples(samples)
    green = model.profile[:, 1]
    assert green[0] < 0.5 and green[3:12].min() > 0.85  # dark within 2 px, as bright as further in from 4 px
