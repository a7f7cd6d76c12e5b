"""Stage II's options beyond published pix2pix: resize-conv decoder, vessel-weighted L1, vessel critic, FOV depth,
EMA of the generator's weights, DiffAugment of D's pairs, the condition skip to full size, each image's own
BatchNorm statistics when painting."""

import cv2
import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from synthmed_lightning.checkpoints import restore_module
from synthmed_lightning.data.datasets import PatchDataset
from synthmed_lightning.data.sample import Sample
from synthmed_lightning.data.transforms import fov_depth, to_tensor_layout, training_augmentation
from synthmed_lightning.models.components.diffaugment import augment_channels
from synthmed_lightning.models.components.ema import ema_update
from synthmed_lightning.models.components.pix2pix import UNetGenerator
from synthmed_lightning.models.image_gan import ImageGAN, batch_statistics

GENERATOR = {"_target_": "synthmed_lightning.models.components.pix2pix.UNetGenerator", "base_channels": 4,
             "num_downs": 3, "upsample": "resize"}
DISCRIMINATOR = {"_target_": "synthmed_lightning.models.components.pix2pix.PatchGANDiscriminator",
                 "base_channels": 4, "n_layers": 2}
CRITIC = {"_target_": "synthmed_lightning.models.components.unet.UNet", "in_channels": 3, "base_channels": 4,
          "depth": 2}


def test_resize_decoder_has_no_transposed_conv_and_keeps_the_shape():
    published = UNetGenerator(base_channels=4, num_downs=3)
    resize = UNetGenerator(base_channels=4, num_downs=3, upsample="resize")
    assert any(isinstance(m, nn.ConvTranspose2d) for m in published.modules())
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in resize.modules())
    out = resize(torch.randn(2, 2, 32, 24))
    assert out.shape == (2, 3, 32, 24) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="upsample"):
        UNetGenerator(upsample="bilinear")


def test_vessel_weight_counts_errors_on_vessels_more():
    model = ImageGAN(GENERATOR, DISCRIMINATOR, vessel_weight=4.0)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8, :] = 1  # a 1-px vessel; its 1-px rim counts too
    real = torch.zeros(1, 3, 16, 16)
    on_vessel, off_vessel = real.clone(), real.clone()
    on_vessel[..., 8, 0] = 1.0
    off_vessel[..., 0, 0] = 1.0
    assert model._l1(on_vessel, real, mask) == pytest.approx(5 * model._l1(off_vessel, real, mask).item())
    plain = ImageGAN(GENERATOR, DISCRIMINATOR)
    assert plain._l1(on_vessel, real, mask) == plain._l1(off_vessel, real, mask)


def test_critic_is_refused_under_dp_and_negative_weights_are_refused():
    with pytest.raises(ValueError, match="vessel_critic"):
        ImageGAN(GENERATOR, DISCRIMINATOR, vessel_critic=CRITIC, privacy={"epsilon": 10.0})
    with pytest.raises(ValueError, match=">= 0"):
        ImageGAN(GENERATOR, DISCRIMINATOR, vessel_weight=-1.0)


class _Losses(L.Callback):
    def __init__(self):
        self.critic_real, self.critic_fake = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.critic_real.append(float(trainer.callback_metrics["train/critic_real"]))
        self.critic_fake.append(float(trainer.callback_metrics["train/critic_fake"]))


def _vessel_batches(count: int, size: int = 32) -> list[dict]:
    """Random straight vessels, darker than a flat background, inside a full FOV."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        mask = torch.zeros(2, 1, size, size)
        for i in range(2):
            row, col = torch.randint(2, size - 2, (2,), generator=generator).tolist()
            mask[i, 0, row, :] = 1
            mask[i, 0, :, col] = 1
        image = (0.2 - 0.8 * mask).expand(-1, 3, -1, -1).clone()
        batches.append({"mask": mask, "fov": torch.ones_like(mask), "image": image})
    return batches


def test_critic_learns_vessels_and_the_painter_follows():
    """Two optimizer steps per iteration (the critic rides on D's); the critic's loss on the real
    patches falls, and so does its loss on the paintings: the painter draws vessels it can find."""
    L.seed_everything(0)
    model = ImageGAN(GENERATOR, DISCRIMINATOR, lr=1e-3, vessel_weight=4.0, vessel_critic=CRITIC)
    losses = _Losses()
    trainer = L.Trainer(max_steps=2 * 60, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[losses])
    trainer.fit(model, DataLoader(_vessel_batches(60), batch_size=None))
    assert trainer.global_step == 120 and len(losses.critic_real) == 60
    first, last = slice(0, 10), slice(-10, None)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    assert mean(losses.critic_real[last]) < 0.8 * mean(losses.critic_real[first])
    assert mean(losses.critic_fake[last]) < 0.95 * mean(losses.critic_fake[first])


def _radial_fundus(size: int = 96) -> Sample:
    """A round FOV whose brightness falls from the centre to the rim, with no vessels: the only
    cue to a pixel's brightness is how deep inside the FOV it lies."""
    fov = np.zeros((size, size), np.uint8)
    cv2.circle(fov, (size // 2, size // 2), size // 2 - 2, 1, -1)
    image = np.repeat((fov_depth(fov) * 255).astype(np.uint8)[..., None], 3, axis=2)
    return Sample(image=image, mask=np.zeros_like(fov), fov=fov, stem="radial")


def test_fov_depth_is_one_at_the_centre_and_zero_at_the_rim_and_outside():
    depth = fov_depth(_radial_fundus().fov)
    assert depth.dtype == np.float32 and depth.max() == pytest.approx(1.0)
    assert depth[48, 48] > 0.95 and 0 < depth[48, 3] < 0.1 and depth[0, 0] == 0
    full = np.ones((10, 12), np.uint8)  # a FOV filling the image: its border is the edge
    assert fov_depth(full)[0, 0] < fov_depth(full)[5, 6] == pytest.approx(1.0)


def test_patches_carry_the_depth_map_cropped_and_augmented_with_them():
    sample = _radial_fundus()
    plain = PatchDataset([sample], patch_size=24, length=4)
    assert "fov_depth" not in plain[0]
    dataset = PatchDataset([sample], patch_size=24, length=8, with_fov_depth=True,
                           augmentation=training_augmentation("default"))
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["fov_depth"].shape == item["fov"].shape == (1, 24, 24)
        # The image is the depth map painted grey (before photometric augmentation): they move together.
        inside = item["fov"][0] > 0
        correlation = np.corrcoef(item["fov_depth"][0][inside], item["image"][0][inside])[0, 1]
        assert correlation > 0.8, correlation


def _fit_painter(fov_depth_channel: bool, batches: list[dict]) -> ImageGAN:
    L.seed_everything(0)
    model = ImageGAN(GENERATOR, DISCRIMINATOR, lr=2e-3, fov_depth=fov_depth_channel)
    trainer = L.Trainer(max_steps=2 * len(batches), accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(batches, batch_size=None))
    return model


def test_the_depth_channel_lets_the_painter_learn_where_it_paints():
    """Patches from the middle of the eye show no FOV edge; brightness that depends on depth is learnt with the
    depth channel and not without it (whole-image L1 of the painting at least a third lower)."""
    sample = _radial_fundus()
    dataset = PatchDataset([sample], patch_size=24, length=8 * 80, with_fov_depth=True)
    np.random.seed(0)
    items = [dataset[i] for i in range(len(dataset))]
    batches = [{key: torch.stack([item[key] for item in items[i: i + 8]]) for key in items[0]}
               for i in range(0, len(items), 8)]
    as_tensor = lambda a: torch.from_numpy(a.astype(np.float32))[None, None]  # noqa: E731
    target = torch.from_numpy(to_tensor_layout(sample.image))[None]
    inside = as_tensor(sample.fov).expand_as(target) > 0
    errors = {}
    for with_depth in (True, False):
        painted = _fit_painter(with_depth, batches).paint(as_tensor(sample.mask), as_tensor(sample.fov))
        errors[with_depth] = (painted - target).abs()[inside].mean().item()
    assert errors[True] < 0.67 * errors[False], errors


def test_ema_update_ramps_up_and_copies_buffers():
    live, average = nn.BatchNorm2d(1), nn.BatchNorm2d(1)
    live.weight.data.fill_(1.0)
    average.weight.data.fill_(0.0)
    live.running_mean.fill_(3.0)
    ema_update(average, live, step=0, decay=0.999)  # first step: the ramp's decay 1/10, not 0.999
    assert average.weight.item() == pytest.approx(0.9)
    assert average.running_mean.item() == 3.0  # copied, not averaged
    average.weight.data.fill_(0.0)
    ema_update(average, live, step=10**6, decay=0.999)  # late: the decay itself
    assert average.weight.item() == pytest.approx(0.001)


def _fit_on_vessels(ema_decay: float = 0.0, iterations: int = 60, diffaugment: str = "",
                    generator: dict = GENERATOR, vessel_weight: float = 0.0) -> ImageGAN:
    L.seed_everything(0)
    model = ImageGAN(generator, DISCRIMINATOR, lr=1e-3, ema_decay=ema_decay, diffaugment=diffaugment,
                     vessel_weight=vessel_weight)
    trainer = L.Trainer(max_steps=2 * iterations, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(_vessel_batches(iterations), batch_size=None))
    return model


def _held_out() -> list[dict]:
    """4 vessel batches beyond the 60 `_fit_on_vessels` trains on."""
    return _vessel_batches(4 + 60)[-4:]


def _held_out_error(model: ImageGAN, on_vessels: bool = False) -> float:
    """Mean L1 of the model's paintings of the held-out vessel batches (on the 1-px vessels only, or everywhere)."""
    held_out = _held_out()
    errors = []
    for b in held_out:
        error = (model.paint(b["mask"], b["fov"]) - b["image"]).abs()
        errors.append(error[(b["mask"] > 0).expand_as(error)].mean().item() if on_vessels else error.mean().item())
    return sum(errors) / len(errors)


def test_ema_painter_learns_paints_with_the_average_and_leaves_training_alone():
    """The EMA copy only watches: G and D train bit-identically with or without it. It paints (forward and
    `paint` use it), it learnt (its L1 on held-out vessel patches well below the untrained painter's), and a
    checkpoint brings it back."""
    untrained = ImageGAN(GENERATOR, DISCRIMINATOR, ema_decay=0.99)
    plain, averaged = _fit_on_vessels(0.0), _fit_on_vessels(0.99)
    assert plain.generator_ema is None and plain.painter is plain.generator
    assert averaged.painter is averaged.generator_ema
    for (name, a), b in zip(plain.generator.state_dict().items(), averaged.generator.state_dict().values()):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, b) for a, b in zip(averaged.generator_ema.parameters(), averaged.generator.parameters()))
    errors = _held_out_error(averaged), _held_out_error(untrained)
    assert errors[0] < 0.5 * errors[1], errors
    restored = restore_module(ImageGAN, {"hyper_parameters": dict(averaged.hparams), "state_dict": averaged.state_dict()})
    mask, fov = _held_out()[0]["mask"], _held_out()[0]["fov"]
    assert torch.equal(restored.paint(mask, fov), averaged.paint(mask, fov))
    with pytest.raises(ValueError, match="ema_decay"):
        ImageGAN(GENERATOR, DISCRIMINATOR, ema_decay=1.0)


def test_pair_augmentation_jitters_only_the_image_and_moves_condition_and_image_together():
    torch.manual_seed(0)
    mask = torch.zeros(4, 1, 16, 16)
    mask[:, :, 5:8, 6:9] = 1
    condition = torch.cat([mask, torch.ones_like(mask)], dim=1) * 2 - 1
    image = (0.5 - mask).expand(-1, 3, -1, -1)  # the image is the mask, inverted: aligned pixel for pixel
    pair = torch.cat([condition, image], dim=1)
    assert torch.equal(augment_channels(pair, "", 2, 5), pair)  # no policy (the default): D sees the pair as is
    jittered = augment_channels(pair, "color", 2, 5)
    assert torch.equal(jittered[:, :2], pair[:, :2]) and not torch.equal(jittered[:, 2:], pair[:, 2:])
    moved = augment_channels(pair, "translation,cutout", 2, 5)
    assert not torch.equal(moved, pair)
    vessel = moved[:, 0] > 0.5  # wherever the moved mask is vessel, the moved image is the vessel's dark
    assert vessel.any() and torch.all(moved[:, 2][vessel] == -0.5)
    with pytest.raises(ValueError, match="DiffAugment policy"):
        ImageGAN(GENERATOR, DISCRIMINATOR, diffaugment="colour")


def test_painter_with_augmented_discriminator_learns():
    """With every pair D sees augmented, G still learns to paint the vessels (L1 on held-out patches
    well below the untrained painter's)."""
    untrained = ImageGAN(GENERATOR, DISCRIMINATOR)
    augmented = _fit_on_vessels(diffaugment="color,translation,cutout")
    errors = _held_out_error(augmented), _held_out_error(untrained)
    assert errors[0] < 0.5 * errors[1], errors


def test_condition_skip_is_off_by_default_and_keeps_the_shape():
    published = UNetGenerator(base_channels=4, num_downs=3)
    skip = UNetGenerator(base_channels=4, num_downs=3, condition_skip=True)
    assert published.head is None and not any(k.startswith("head.") for k in published.state_dict())
    out = skip(torch.randn(2, 2, 32, 24))
    assert out.shape == (2, 3, 32, 24) and out.abs().max() <= 1
    assert skip.head[0].in_channels == 8 + 2  # head features (base_channels // 2, at least 8) + the condition


def test_condition_skip_paints_one_pixel_vessels_better():
    """The 1-px vessels of `_vessel_batches` reach the output through a x2 upsampling without the skip;
    with it the last convs see them at full size: L1 on the vessel pixels of held-out patches at least
    a quarter lower, for the same training (vessel-weighted L1, as the default painter)."""
    skip = {**GENERATOR, "condition_skip": True}
    errors = (_held_out_error(_fit_on_vessels(generator=skip, vessel_weight=4.0), True),
              _held_out_error(_fit_on_vessels(vessel_weight=4.0), True))
    assert errors[0] < 0.75 * errors[1], errors


def test_batch_statistics_normalise_with_the_batch_and_leave_the_running_averages_alone():
    network = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Dropout(0.5)).eval()
    network[1].running_mean.fill_(5.0)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    x = torch.randn(1, 1, 8, 8)
    with batch_statistics(network):
        inside = network(x)
        assert network[1].training and not network[2].training  # dropout stays off
    features = network[0](x)
    expected = (features - features.mean((0, 2, 3), keepdim=True)) / torch.sqrt(
        features.var((0, 2, 3), unbiased=False, keepdim=True) + network[1].eps)
    assert torch.allclose(inside, expected * network[1].weight[:, None, None] + network[1].bias[:, None, None], atol=1e-5)
    assert not network[1].training and network[1].momentum == 0.1
    for key, value in network.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_painting_with_each_images_own_statistics():
    """`paint_statistics=image` paints each image alone with its own BatchNorm statistics: the same
    image whatever it is painted beside, not the running-statistics painting, and the weights untouched."""
    torch.manual_seed(0)
    model = ImageGAN(GENERATOR, DISCRIMINATOR, paint_statistics="image")
    for m in model.generator.modules():  # running averages far from any batch's statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = _held_out()
    mask = torch.cat([batches[0]["mask"], batches[1]["mask"]])
    fov = torch.ones_like(mask)
    together = model.paint(mask, fov)
    assert torch.equal(together[:1], model.paint(mask[:1], fov[:1]))
    assert torch.equal(together[2:], model.paint(mask[2:], fov[2:]))
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    running = ImageGAN(GENERATOR, DISCRIMINATOR)
    running.load_state_dict(model.state_dict())
    assert (running.paint(mask, fov) - together).abs().max() > 0.05
    with pytest.raises(ValueError, match="paint_statistics"):
        ImageGAN(GENERATOR, DISCRIMINATOR, paint_statistics="batch")
