"""data.train_count / data.train_draw: k of the training images, the same validation images for every k."""

import pytest

from synthmed_lightning.data.datamodule import VesselDataModule
from synthmed_lightning.errors import ConfigError

PHANTOM = {"count": 8, "height": 64, "width": 64}


def _stems(**kwargs) -> tuple[list[str], list[str]]:
    """(training stems, validation stems) of a phantom datamodule with 2 of 8 images held out."""
    dm = VesselDataModule(name="phantom", reader=PHANTOM, patch_size=32, val_count=2, **kwargs)
    dm.setup("fit")
    return [s.stem for s in dm.train_samples], [s.stem for s in dm.val_samples]


def test_train_count_keeps_k_distinct_images_drawn_by_the_draw():
    every, val = _stems()
    first, first_val = _stems(train_count=3, train_draw=0)
    assert len(set(first)) == 3 and set(first) <= set(every)
    assert first_val == val  # validation is the same whatever k or draw
    assert _stems(train_count=3, train_draw=0)[0] == first  # the same draw, the same images
    others = [_stems(train_count=3, train_draw=d)[0] for d in (1, 2, 3)]
    assert any(stems != first for stems in others)  # another draw, other images
    # Within a draw a larger k only adds images, and k = all is every training image.
    assert set(_stems(train_count=2, train_draw=0)[0]) <= set(first)
    assert _stems(train_count=6)[0] == every


@pytest.mark.parametrize("count, message", [(7, r"data.train_count=7: only 6 training images are left after "
                                                   r"data.val_count=2"),
                                            (0, r"data.train_count=0: must be a whole number >= 1")])
def test_a_count_out_of_range_is_one_line(count, message):
    with pytest.raises(ConfigError, match=message):
        _stems(train_count=count)


def test_a_negative_draw_is_refused():
    with pytest.raises(ConfigError, match="data.train_draw=-1"):
        _stems(train_count=2, train_draw=-1)
