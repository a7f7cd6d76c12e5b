"""Stage I's mask refiner (models/components/refiner.py): it learns native-resolution vessels from
coarse masks, trains inside stage=mask without touching D and G, draws what the export writes, and
leaves checkpoints from before it (and privacy=dp runs) as they were."""

import json

import cv2
import numpy as np
import pytest
import torch

from helpers import compose_config, smoke_run
from synthmed_lightning.checkpoints import load_checkpoint, restore_module
from synthmed_lightning.data.mask_data import (MaskDataModule, coarse_to_native, fov_to_native, from_square,
                                               square_resize_binary)
from synthmed_lightning.data.transforms import rotate_about_centre
from synthmed_lightning.errors import CheckpointError, ConfigError
from synthmed_lightning.metrics.mask_stats import skeleton, vessel_widths
from synthmed_lightning.models.components.refiner import (MaskRefiner, cap_width, join_fragments, refiner_loss,
                                                          remove_fragments)
from synthmed_lightning.models.mask_gan import _ROTATION_STREAM, MaskGAN
from synthmed_lightning.stages.mask import NoiseGANStage
from synthmed_lightning.utils import to_primitive

PHANTOM = {"name": "phantom", "reader": {"count": 6, "seed": 0, "height": 96, "width": 96}}
NATIVE = 96  # the smoke phantom's size


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory):
    return smoke_run(tmp_path_factory, "mask")  # the smoke profile trains a refiner


@pytest.fixture(scope="module")
def checkpoint(mask_run) -> dict:
    return load_checkpoint(mask_run / "checkpoints" / "last.ckpt", "mask")


def thin_line_masks(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(count, size, size) uint8 {0, 1}: a few random 1-2 px lines each, like capillaries."""
    masks = np.zeros((count, size, size), np.uint8)
    for mask in masks:
        for _ in range(4):
            start, end = rng.integers(0, size, 2), rng.integers(0, size, 2)
            cv2.line(mask, tuple(map(int, start)), tuple(map(int, end)), 1, int(rng.integers(1, 3)))
    return masks


def dice(prediction: np.ndarray, target: np.ndarray) -> float:
    return 2 * np.count_nonzero(prediction & target) / max(1, np.count_nonzero(prediction) + np.count_nonzero(target))


def test_refiner_learns_thin_lines_from_their_coarse_version():
    """Masks of 1-2 px lines, reduced 3x as the DCGAN's data is (area coverage >= 0.25) and upsampled
    back: fifty steps take the refiner's Dice with the native lines well above a floor
    (the coarse masks' own Dice, whose lines are 3-4 px wide)."""
    torch.manual_seed(0)
    native = thin_line_masks(8, 48, np.random.default_rng(0))
    coarse = np.stack([coarse_to_native(square_resize_binary(m, 16, "area", 0.25), 48, 48) for m in native])
    x, y = torch.from_numpy(coarse)[:, None], torch.from_numpy(native.astype(np.float32))[:, None]
    refiner = MaskRefiner(base_channels=4, depth=2)
    optimizer = torch.optim.Adam(refiner.parameters(), lr=1e-2)
    for _ in range(50):
        loss = refiner_loss(refiner(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    refiner.eval()
    with torch.no_grad():
        refined = (torch.sigmoid(refiner(x))[:, 0] >= 0.5).numpy()
    floor = dice(coarse >= 0.5, native > 0)
    assert dice(refined, native > 0) > floor + 0.1  # 0.87 against 0.70


def test_refiner_takes_any_size():
    refiner = MaskRefiner(base_channels=4, depth=3).eval()
    assert refiner(torch.rand(2, 1, 37, 45)).shape == (2, 1, 37, 45)


def test_fragments_are_joined_across_small_gaps_and_specks_dropped():
    mask = np.zeros((20, 40), bool)
    mask[10, 2:15] = True
    mask[10, 19:35] = True  # 4 px gap: joined
    mask[2, 38] = True      # a far speck: not joined, then dropped
    joined = join_fragments(mask, max_gap=5)
    assert joined[10, 2:35].all() and cv2.connectedComponents(joined.astype(np.uint8))[0] - 1 == 2
    assert cv2.connectedComponents(join_fragments(mask, max_gap=3).astype(np.uint8))[0] - 1 == 3
    assert not remove_fragments(joined, min_area=2)[2, 38] and remove_fragments(joined, 2)[10, 2:35].all()


def test_cap_width_narrows_trunks_to_the_cap_and_leaves_thinner_vessels_alone():
    mask = np.zeros((60, 80), bool)
    mask[20:35, 5:60] = True   # a 15 px trunk
    mask[27:30, 60:78] = True  # a 3 px branch continuing it
    mask[45, 10:70] = True     # a separate 1 px vessel
    capped = cap_width(mask, max_width=7)
    assert not np.any(capped & ~mask)  # only clears
    assert np.array_equal(capped[:, 62:], mask[:, 62:]) and np.array_equal(capped[40:], mask[40:])
    widths = vessel_widths(capped, skeleton(capped))
    assert widths.max() <= 7 and np.all(capped[:40, 20:45].sum(axis=0) == 7)  # the trunk is 7 px now
    assert cv2.connectedComponents(capped.astype(np.uint8))[0] - 1 == 2  # still one tree and the lone vessel
    assert np.array_equal(cap_width(mask, max_width=15)[:, 20:45], mask[:, 20:45])  # as wide as the cap: kept
    assert np.array_equal(cap_width(mask, max_width=17), mask)  # nothing wider than the cap: unchanged


def test_max_vessel_width_narrows_the_native_samples(checkpoint):
    settings = {**checkpoint["hyper_parameters"], "edge_fade": None}  # its draws follow the vessel pieces
    plain = restore_module(MaskGAN, {**checkpoint, "hyper_parameters": settings})
    capped = restore_module(MaskGAN, {**checkpoint, "hyper_parameters": {**settings, "max_vessel_width": 3}})
    wide, narrow = (m.generate_native(3, seed=5, height=NATIVE, width=NATIVE)["mask"].astype(bool) for m in (plain, capped))
    assert not np.any(narrow & ~wide) and narrow.sum() < wide.sum()
    with pytest.raises(CheckpointError, match="model.max_vessel_width=0"):
        restore_module(MaskGAN, {**checkpoint, "hyper_parameters": {**checkpoint["hyper_parameters"], "max_vessel_width": 0}})


class FixedProbability(torch.nn.Module):
    """A stand-in refiner whose vessel probability is a given (H, W) map, whatever its input."""

    def __init__(self, probability: np.ndarray):
        super().__init__()
        self.logits = torch.logit(torch.from_numpy(probability.astype(np.float32)), eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], 1, -1, -1)


def test_thin_threshold_adds_the_faint_vessels_centre_lines_one_pixel_wide(checkpoint):
    """A trunk the refiner is sure of, a faint 5 px band between the two thresholds and a fainter blob:
    the band's centre line joins the mask 1 px wide, the trunk is unchanged and the blob stays out."""
    probability = np.full((NATIVE, NATIVE), 0.01)
    probability[20:27, 10:86] = 0.9    # trunk, 7 px
    probability[50:55, 10:86] = 0.35   # faint vessel, 5 px
    probability[70:80, 40:50] = 0.15   # fainter than thin_threshold
    settings = {**checkpoint["hyper_parameters"], "edge_fade": None, "join_gap": 0.0, "min_fragment": 0.0}
    masks = {}
    for threshold in (None, 0.25):
        module = restore_module(MaskGAN, {**checkpoint, "hyper_parameters": {**settings, "thin_threshold": threshold}})
        module.refiner = FixedProbability(probability)
        masks[threshold] = module.refine(module.binary_mask(module.generate_raw(1, 0)[:, :1]), NATIVE, NATIVE)[0] > 0
    fov = fov_to_native(module.fov[0, 0].numpy().astype(np.uint8), NATIVE, NATIVE) > 0
    assert np.array_equal(masks[None], (probability >= 0.5) & fov)
    added = masks[0.25] & ~masks[None]
    assert added[50:55].any() and not added[:50].any() and not added[55:].any()
    assert np.all(added[50:55].sum(axis=0) <= 1)  # one pixel across the band
    assert added[52, 30:66].all()  # along its centre, where the FOV is
    with pytest.raises(CheckpointError, match="model.thin_threshold=0.5"):
        restore_module(MaskGAN, {**checkpoint, "hyper_parameters": {**settings, "thin_threshold": 0.5}})


def test_rotate_about_centre_turns_counter_clockwise_about_the_fov_centroid():
    bar = np.zeros((41, 41), np.float32)
    bar[20, 26:36] = 1  # right of the centre (20, 20)
    fov = np.ones((41, 41), bool)
    turned = rotate_about_centre(bar, 90, fov, cv2.INTER_NEAREST)
    rows, cols = np.nonzero(turned)
    assert set(cols) == {20} and rows.min() >= 4 and rows.max() <= 14  # above the centre, as displayed
    assert np.array_equal(rotate_about_centre(bar, 0, fov), bar)
    rows, cols = np.nonzero(rotate_about_centre(bar, 180, fov, cv2.INTER_NEAREST))
    assert set(rows) == {20} and cols.min() >= 4 and cols.max() <= 14
    corner = np.zeros((41, 41), bool)
    corner[:21, :21] = True  # centroid (10, 10): turned about it, the bar leaves the image
    assert not rotate_about_centre(bar, 180, corner, cv2.INTER_NEAREST).any()


def test_layout_rotation_turns_each_native_sample_by_its_own_angle(checkpoint):
    """The refiner's native input is turned, so a turned sample is its unturned self turned (up to
    what a refiner that is not rotation-equivariant draws differently); the same seed, the same
    angles; the coarse samples stay as they are."""
    settings = {**checkpoint["hyper_parameters"], "edge_fade": None}
    plain = restore_module(MaskGAN, {**checkpoint, "hyper_parameters": settings})
    turned = restore_module(MaskGAN, {**checkpoint, "hyper_parameters": {**settings, "layout_rotation": 40.0}})
    a, b = (m.generate_native(4, seed=5, height=NATIVE, width=NATIVE) for m in (plain, turned))
    assert np.array_equal(b["mask"], turned.generate_native(4, seed=5, height=NATIVE, width=NATIVE)["mask"])
    assert torch.equal(plain.generate(4, seed=5)["mask"], turned.generate(4, seed=5)["mask"])
    fov = a["fov"][0] > 0
    angles = np.random.default_rng([5, _ROTATION_STREAM]).uniform(-40, 40, 4)
    for before, after, angle in zip(a["mask"], b["mask"], angles):
        expected = rotate_about_centre(before, angle, fov, cv2.INTER_NEAREST).astype(bool) & fov
        assert iou(after, expected) > 0.5, angle
        if abs(angle) > 10:
            assert iou(after, expected) > iou(after, before) + 0.2, angle
    with pytest.raises(CheckpointError, match="model.layout_rotation=200"):
        restore_module(MaskGAN, {**checkpoint, "hyper_parameters": {**settings, "layout_rotation": 200.0}})


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))


def test_datamodule_serves_native_crops_without_changing_the_gan_items():
    """The crops come from the training mask's own degradation, and drawing them changes none of
    the whole-mask items D sees (same seed, same batches)."""
    def batch(native_crop):
        np.random.seed(0)
        torch.manual_seed(0)
        dm = MaskDataModule(**PHANTOM, image_size=32, batch_size=4, samples_per_epoch=8, mask_resize="area",
                            mask_threshold=0.25, native_crop=native_crop, num_workers=0)
        dm.setup("fit")
        return dm, next(iter(dm.train_dataloader()))

    dm, with_crops = batch(40)
    _, without = batch(0)
    assert torch.equal(with_crops["mask"], without["mask"]) and "coarse_crop" not in without
    assert with_crops["coarse_crop"].shape == with_crops["native_crop"].shape == (4, 1, 40, 40)
    assert set(torch.unique(with_crops["native_crop"]).tolist()) <= {0.0, 1.0}
    coarse, native = dm.native_pairs[0]
    assert np.array_equal(coarse, coarse_to_native(dm.masks[0], NATIVE, NATIVE)) and native.shape == (NATIVE, NATIVE)
    # upsampling is from_square's geometry: thresholded, it is the export's mapping of the square
    assert np.array_equal(coarse >= 0.5, from_square(dm.masks[0], NATIVE, NATIVE) > 0)


def test_with_soft_masks_the_refiner_learns_from_the_coverage():
    """soft_masks: the refiner's coarse crops are the coverage the GAN learns (thin vessels faint, not
    cut at the threshold), so it reads at sampling time what it was trained on."""
    dm = MaskDataModule(**PHANTOM, image_size=32, batch_size=4, samples_per_epoch=8, mask_resize="area",
                        mask_threshold=0.25, soft_masks=True, native_crop=40, num_workers=0)
    dm.setup("fit")
    coarse, _ = dm.native_pairs[0]
    assert np.array_equal(dm.coarse_masks(), dm.coverage)
    assert np.array_equal(coarse, coarse_to_native(dm.coverage[0], NATIVE, NATIVE))
    faint = (dm.coverage[0] > 0) & (dm.coverage[0] < 0.25)  # vessel the thresholded mask drops
    assert faint.any() and not dm.masks[0][faint].any()


def test_a_coverage_reading_refiner_draws_from_the_generators_coverage(checkpoint):
    hard = restore_module(MaskGAN, checkpoint)
    soft_checkpoint = {**checkpoint, "hyper_parameters": {**checkpoint["hyper_parameters"], "refiner_reads_coverage": True}}
    soft = restore_module(MaskGAN, soft_checkpoint)
    out = soft.generate_native(3, seed=5, height=NATIVE, width=NATIVE)
    assert out["mask"].shape == (3, NATIVE, NATIVE) and not np.any(out["mask"] & (1 - out["fov"]))
    assert np.array_equal(out["mask"], soft.generate_native(3, seed=5, height=NATIVE, width=NATIVE)["mask"])
    assert not np.array_equal(out["mask"], hard.generate_native(3, seed=5, height=NATIVE, width=NATIVE)["mask"])


def test_smoke_run_trains_the_refiner_and_measures_native_samples(mask_run, checkpoint):
    assert checkpoint["hyper_parameters"]["refiner"]["_target_"].endswith("MaskRefiner")
    assert any(key.startswith("refiner.") for key in checkpoint["state_dict"])
    metrics = json.loads((mask_run / "metrics.json").read_text())
    assert 0 < metrics["refiner/dice"] <= 1
    for key in ("branch_points", "components", "vessel_fraction"):
        assert np.isfinite(metrics[f"anatomy/{key}"]) and np.isfinite(metrics[f"anatomy_vs_real/{key}"]), key


def test_generate_native_draws_refined_masks_inside_the_fov(checkpoint):
    model = restore_module(MaskGAN, checkpoint)
    out = model.generate_native(3, seed=5, height=NATIVE, width=NATIVE)
    assert out["mask"].shape == out["fov"].shape == (3, NATIVE, NATIVE) and out["mask"].dtype == np.uint8
    assert not np.any(out["mask"] & (1 - out["fov"]))
    again = model.generate_native(3, seed=5, height=NATIVE, width=NATIVE)
    assert np.array_equal(out["mask"], again["mask"])
    assert model.generate_native(1, seed=5, height=120, width=100)["mask"].shape == (1, 120, 100)


def test_checkpoint_without_refiner_still_exports_through_from_square(checkpoint):
    """A checkpoint from before the refiner (no `refiner` settings, no refiner weights, no edge fade) loads,
    and its native samples are the squares mapped back as before (inside the FOV, whose rim is smoothed)."""
    old = dict(checkpoint)
    old["hyper_parameters"] = {k: v for k, v in checkpoint["hyper_parameters"].items()
                               if k not in ("refiner", "refiner_lr", "refiner_batch", "refiner_threshold",
                                            "join_gap", "min_fragment", "edge_fade")}
    old["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("refiner.")}
    model = restore_module(MaskGAN, old)
    assert model.refiner is None
    native = model.generate_native(2, seed=7, height=NATIVE, width=NATIVE)
    square = model.generate(2, seed=7)
    fov = fov_to_native((square["fov"][0, 0].numpy() > 0.5).astype(np.uint8), NATIVE, NATIVE)
    for mask, out in zip(square["mask"], native["mask"]):
        assert np.array_equal(out, from_square((mask[0].numpy() > 0.5).astype(np.uint8), NATIVE, NATIVE) & fov)
    # layout_rotation turns the mapped-back squares (nearest neighbour: they stay binary)
    turned = restore_module(MaskGAN, {**old, "hyper_parameters": {**old["hyper_parameters"], "layout_rotation": 90.0}})
    angles = np.random.default_rng([7, _ROTATION_STREAM]).uniform(-90, 90, 2)
    for mask, out, angle in zip(square["mask"], turned.generate_native(2, seed=7, height=NATIVE, width=NATIVE)["mask"], angles):
        mapped = from_square((mask[0].numpy() > 0.5).astype(np.uint8), NATIVE, NATIVE)
        assert np.array_equal(out, rotate_about_centre(mapped, angle, fov > 0, cv2.INTER_NEAREST) & fov)


def test_a_refiner_target_from_a_checkpoint_must_be_one_of_ours(checkpoint, tmp_path):
    crafted = dict(checkpoint)
    crafted["hyper_parameters"] = {**checkpoint["hyper_parameters"],
                                   "refiner": {"_target_": "builtins.open", "file": str(tmp_path / "x"), "mode": "w"}}
    with pytest.raises(CheckpointError, match="refused"):
        restore_module(MaskGAN, crafted)
    assert not (tmp_path / "x").exists()


def test_privacy_dp_trains_without_refiner_and_refuses_one_in_one_line():
    """privacy=dp composes model.refiner=null; asking for one there is a ConfigError (one line on the
    command line) before anything is built, and the module refuses it too."""
    assert compose_config("stage=mask", "profile=smoke", "privacy=dp").model.refiner is None
    assert compose_config("stage=mask", "profile=smoke").model.refiner is not None
    cfg = compose_config("stage=mask", "profile=smoke", "privacy=dp", "model.refiner=${mask_refiner.none}")
    with pytest.raises(ConfigError, match=r"model.refiner: not possible with privacy=dp .*model.refiner=null") as error:
        NoiseGANStage(MaskGAN).check(cfg)
    assert "\n" not in str(error.value)
    settings = to_primitive(cfg.model)
    settings.pop("_target_")
    with pytest.raises(ValueError, match="model.refiner=null"):
        MaskGAN(**settings, privacy={"epsilon": 1.0})
