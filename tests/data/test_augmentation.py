"""The segmenter's training augmentation (data/transforms.py): `strong` varies the look more than
`default`, neither touches what the mask says, and an unknown name is a config error."""

import numpy as np
import pytest

from synthmed_lightning.data.transforms import training_augmentation
from synthmed_lightning.errors import ConfigError


def _looks(strength: str, draws: int = 200) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per draw: the mean and standard deviation of a flat grey image after augmentation, and the masks."""
    augment = training_augmentation(strength)
    augment.set_random_seed(0)
    image = np.full((48, 48, 3), 120, np.uint8)
    mask = np.zeros((48, 48), np.uint8)
    mask[:, 20:24] = 1
    looks, masks = [], []
    for _ in range(draws):
        out = augment(image=image, mask=mask)
        looks.append((out["image"].mean(), out["image"].std()))
        masks.append(out["mask"])
    return np.array(looks), masks


def test_strong_varies_brightness_texture_more_than_default():
    default, _ = _looks("default")
    strong, masks = _looks("strong")
    assert strong[:, 0].std() > 1.5 * default[:, 0].std()  # illumination and contrast
    assert (strong[:, 1] > 1.0).mean() > 0.2 > (default[:, 1] > 1.0).mean()  # noise on a flat image
    # Photometric changes leave the labels alone: every mask is the 4 px vessel moved, turned or scaled.
    assert all(0.8 * 4 * 48 < m.sum() < 1.2 * 4 * 48 for m in masks)


def test_an_unknown_strength_names_the_setting():
    with pytest.raises(ConfigError, match="data.augmentation='heavy'"):
        training_augmentation("heavy")
