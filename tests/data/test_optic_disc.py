"""The optic-disc model on hand-made fundus images whose hub, disc and shift are known, and on DRIVE."""

import cv2
import numpy as np
import pytest

from synthmed_lightning.data.optic_disc import RING_COUNT, OpticDisc, disc_profile, find_hub

SIZE = 320
HUB = (160, 70)   # (row, col) where the thick vessels meet
SHIFT = 20        # px: the disc's centre lies this far right of the hub, towards the FOV's centre


def _fov() -> np.ndarray:
    rows, cols = np.indices((SIZE, SIZE))
    return (np.hypot(rows - SIZE / 2, cols - SIZE / 2) <= 150).astype(np.uint8)


def _mask(width: int = 6) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    for end in [(60, 230), (260, 230), (100, 300), (220, 300), (40, 40), (280, 40)]:  # both ways: a hub
        cv2.line(mask, HUB[::-1], end[::-1], 1, width)
    return mask & _fov()


def _image(mask: np.ndarray, background: float = 120.0, disc: float = 1.0, radius: float = 25.0) -> np.ndarray:
    """Flat background, vessels at 70 %, and a disc `disc` times brighter within `radius` of the
    disc's centre, falling to the background over 10 px."""
    rows, cols = np.indices((SIZE, SIZE))
    r = np.hypot(rows - HUB[0], cols - (HUB[1] + SHIFT))
    gain = 1 + (disc - 1) * np.clip((radius + 10 - r) / 10, 0, 1)
    green = background * gain * np.where(mask > 0, 0.7, 1.0) * (_fov() > 0)
    return np.clip(np.rint(np.stack([1.6 * green, green, 0.5 * green], axis=-1)), 0, 255).astype(np.uint8)


def _fitted(discs=((2.0, 25.0),) * 3) -> OpticDisc:
    images = [_image(_mask(), disc=d, radius=r) for d, r in discs]
    return OpticDisc.fit(images, [_mask()] * len(images), [_fov()] * len(images), [301.0] * len(images))


def test_the_hub_is_where_the_thick_vessels_meet():
    row, col = find_hub(_mask(), _fov())
    assert np.hypot(row - HUB[0], col - HUB[1]) < 30  # pulled towards where most of them run
    assert find_hub(_mask(width=1), _fov()) is None  # thin vessels only: nothing to find a disc by


def test_fit_reads_the_disc_and_apply_gives_it_to_a_painting_without_one():
    model = _fitted()
    # the shift is learnt from the hub as found, so the disc goes back where the photographs have it
    assert np.hypot(*np.subtract(model.centre(_mask(), _fov()), (HUB[0], HUB[1] + SHIFT))) < 6
    assert np.exp(model.profile[0, 1]) == pytest.approx(2.0, abs=0.15)
    assert abs(model.profile[-1]).max() < 0.05  # back to the background by the last ring
    assert model.size_spread == pytest.approx(0.0, abs=1e-9) and model.brightness_spread == pytest.approx(0.0, abs=1e-9)
    painting = _image(_mask(), background=100.0)  # no disc
    out = model.apply(painting, _mask(), _fov(), seed=0)
    centre = model.centre(_mask(), _fov())
    before, after = (disc_profile(x, _mask(), _fov(), centre)[:, 1] for x in (painting, out))
    inner = slice(0, RING_COUNT // 2)
    assert np.nanmax(np.abs(after[inner] - model.profile[inner, 1])) < 0.1 < np.nanmax(np.abs(before[inner] - model.profile[inner, 1]))
    vessel = (_mask() > 0) & (np.hypot(*(np.indices((SIZE, SIZE)) - np.array(centre)[:, None, None])) < 15)
    assert out[..., 1][vessel].mean() > 1.5 * painting[..., 1][vessel].mean()  # vessels on the disc brighten with it
    assert np.array_equal(out[_fov() == 0], painting[_fov() == 0])


def test_a_mask_without_a_hub_leaves_the_painting_alone():
    painting = _image(_mask(width=1))
    assert np.array_equal(_fitted().apply(painting, _mask(width=1), _fov(), seed=0), painting)


def test_discs_of_several_sizes_give_spreads_that_seeds_draw_from():
    model = _fitted(((1.6, 20.0), (2.0, 25.0), (2.6, 32.0), (1.8, 28.0)))
    assert model.size_spread > 0 and model.brightness_spread > 0
    painting = _image(_mask(), background=100.0)
    outs = [model.apply(painting, _mask(), _fov(), seed) for seed in range(3)]
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])
    np.testing.assert_array_equal(model.apply(painting, _mask(), _fov(), 1), outs[1])


def test_dict_round_trip_and_untrusted_values_refused():
    model = _fitted()
    again = OpticDisc.from_dict(model.to_dict())
    np.testing.assert_array_equal(again.profile, model.profile)
    assert again.shift == model.shift
    good = model.to_dict()
    for key, value in [("format", "other"), ("rings", 3), ("profile", [[0.0] * 3] * 4), ("size_spread", -1.0),
                       ("fov_diameter", 0), ("shift", "far"), ("profile", [[float("inf")] * 3] * RING_COUNT)]:
        with pytest.raises(ValueError):
            OpticDisc.from_dict({**good, key: value})


def test_drive_photographs_have_a_bright_disc_inward_of_the_hub(drive_root):
    from synthmed_lightning.data.readers import read_dataset

    model = OpticDisc.fit_samples(read_dataset({"name": "drive", "root": str(drive_root)}, "train")[:6])
    assert np.exp(model.profile[0, 1]) > 1.5 and abs(model.profile[-1, 1]) < 0.1
    assert 0 < model.shift < 60
