"""A study's extra seeds (study.seeds) give other exports, and its own seed the same one: the samples
stage=generate writes, drawn in-process from smoke generators (the seed of sample i derives from
the export's seed and i). That stage=generate run twice with one seed writes byte-identical files
is tests/test_export.py::test_generate_is_deterministic_verifiable_and_loadable, on the same smoke
checkpoints (smoke_run caches them per session, so a full run trains them once)."""

import numpy as np
import pytest
import torch

from helpers import compose_config, smoke_run
from synthmed_lightning.synthesis import build_generator, sample_seed


@pytest.mark.slow
def test_the_same_seed_draws_the_same_samples_and_another_seed_others(tmp_path_factory):
    mask, image = (smoke_run(tmp_path_factory, stage) / "checkpoints" / "last.ckpt" for stage in ("mask", "image"))
    cfg = compose_config("stage=generate", "profile=smoke", f"mask_ckpt={mask}", f"image_ckpt={image}")
    generator = build_generator(cfg, torch.device("cpu"))

    def draw(seed: int) -> list[np.ndarray]:
        indices = range(2)
        return [array for sample in generator(indices, [sample_seed(seed, i) for i in indices], 96, 96) for array in sample]

    first, again, other = draw(3), draw(3), draw(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    images_and_masks = [i for i in range(len(first)) if i % 3 != 2]  # (image, mask, FOV) per sample; the FOV is fixed
    assert all(not np.array_equal(first[i], other[i]) for i in images_and_masks)
