"""DP-SGD pieces (models/dp.py, privacy=dp): the plan and its accountant, per-sample clipping, the
noise, the Poisson batches, and what a private discriminator may not contain."""

import numpy as np
import pytest
import torch
from torch import nn

from synthmed_lightning.data.loading import make_train_loader
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.models.dp import (DPPlan, attach_per_sample_gradients, epsilon_spent, make_private_network,
                                          plan_dp, prepare_noise_only_step, private_optimizer, recording)
from synthmed_lightning.models.mask_gan import MaskGAN

pytest.importorskip("opacus")

DP = {"mode": "dp", "target_epsilon": 10.0, "delta": 1e-3, "max_grad_norm": 1.0, "norm": "group"}
DCGAN = "synthmed_lightning.models.components.dcgan."


def mask_gan(privacy: dict, **discriminator) -> MaskGAN:
    """A small Stage I module; `discriminator` settings on top of a BatchNorm D."""
    return MaskGAN(generator={"_target_": DCGAN + "DCGANGenerator", "out_channels": 1, "image_size": 32, "base_channels": 8},
                   discriminator={"_target_": DCGAN + "MultiScaleDiscriminator", "in_channels": 1, "image_size": 32,
                                  "base_channels": 8, **discriminator},
                   privacy=privacy)


def test_plan_spends_the_target_epsilon_and_more_noise_spends_less():
    plan = plan_dp(DP, records=20, batch_size=4, steps=500)
    assert plan.sample_rate == pytest.approx(0.2) and plan.expected_batch_size == 4
    assert 9.5 < plan.epsilon(500) <= 10.0 + 1e-6
    assert plan.epsilon(250) < plan.epsilon(500)
    assert epsilon_spent(2 * plan.noise_multiplier, 0.2, 500, 1e-3) < plan.epsilon(500) / 2
    # pix2pix releases two sums per batch: the noise is scaled so the same budget holds
    pix2pix = plan_dp(DP, records=20, batch_size=4, steps=500, sensitivity=5 ** 0.5)
    assert pix2pix.noise_multiplier == pytest.approx(plan.noise_multiplier * 5 ** 0.5)
    assert pix2pix.epsilon(500) == pytest.approx(plan.epsilon(500))
    assert plan_dp({"mode": "none"}, records=20, batch_size=4, steps=500) is None


@pytest.mark.parametrize("privacy, images, batch, fragment", [
    ({**DP, "mode": "dpp"}, 20, 4, "privacy.mode='dpp'"),
    (DP, 4, 4, "batch size (4)"),
    ({**DP, "delta": 0.1}, 20, 4, "privacy.delta=0.1"),
    ({**DP, "target_epsilon": None}, 20, 4, "privacy.noise_multiplier or"),
    ({**DP, "noise_multiplier": -1.0}, 20, 4, "privacy.noise_multiplier=-1.0"),
    ({**DP, "norm": "batch"}, 20, 4, "privacy.norm='batch'"),
])
def test_bad_plans_are_config_errors(privacy, images, batch, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        plan_dp(privacy, records=images, batch_size=batch, steps=100)


def _private_linear(plan: DPPlan):
    net = make_private_network(nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4), nn.ReLU(inplace=True), nn.Linear(4, 1)),
                               "test network")
    hooks = attach_per_sample_gradients(net)
    return net, hooks, private_optimizer(torch.optim.SGD(net.parameters(), lr=1.0), plan)


def _flat(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in net.parameters()])


def test_each_sample_moves_the_weights_by_at_most_the_clip():
    """No noise, SGD with lr 1: a huge loss on n samples moves the weights by at most n * C / batch."""
    plan = DPPlan(noise_multiplier=0.0, max_grad_norm=0.5, sample_rate=0.5, expected_batch_size=4, delta=1e-3)
    net, hooks, optimizer = _private_linear(plan)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())  # BatchNorm mixes samples
    before = _flat(net)
    with recording(hooks):
        loss = 1e6 * net(torch.randn(3, 8)).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    optimizer.step()
    moved = (_flat(net) - before).norm()
    assert 0 < moved <= 3 * 0.5 / 4 + 1e-6


def test_noise_moves_the_weights_even_without_data_and_hooks_record_only_when_asked():
    plan = DPPlan(noise_multiplier=1.0, max_grad_norm=1.0, sample_rate=0.5, expected_batch_size=4, delta=1e-3)
    net, hooks, optimizer = _private_linear(plan)
    before = _flat(net)
    prepare_noise_only_step(optimizer)  # an empty Poisson batch still takes its (noise) step
    optimizer.step()
    assert (_flat(net) - before).norm() > 0
    optimizer.zero_grad(set_to_none=True)
    net(torch.randn(3, 8)).sum().backward()  # outside `recording`: plain gradients only
    assert all(getattr(p, "grad_sample", None) is None for p in net.parameters())


def test_poisson_batches_hold_each_image_at_most_once_at_the_sample_rate():
    class Items(torch.utils.data.Dataset):
        num_images = 10

        def __len__(self):
            return 40

        def draw(self, k, rng):
            return {"index": torch.tensor(k), "x": torch.from_numpy(rng.random(3).astype(np.float32))}

    torch.manual_seed(0)
    loader = make_train_loader(Items(), batch_size=4, num_workers=0, pin_memory=False, poisson_sample_rate=0.3)
    sizes = []
    for _ in range(50):
        for batch in loader:
            indices = batch["index"].tolist()
            assert len(indices) == len(set(indices)) and batch["x"].shape == (len(indices), 3)
            sizes.append(len(indices))
    assert len(sizes) == 50 * 10  # as many batches per epoch as full batches of the dataset's length
    assert abs(np.mean(sizes) - 3.0) < 0.3 and 0 in sizes  # q x images on average; empty batches happen


def test_private_mask_gan_keeps_checkpoint_keys_and_refuses_sample_mixing_layers():
    plan = plan_dp(DP, records=20, batch_size=4, steps=100).to_dict()
    private = mask_gan(plan)
    private.configure_optimizers()  # attaches the hooks: no new state_dict keys
    assert not any(isinstance(m, nn.BatchNorm2d) for m in private.discriminator.modules())
    rebuilt = MaskGAN(**private.hparams)
    rebuilt.load_state_dict(private.state_dict())
    assert set(rebuilt.state_dict()) == set(private.state_dict())
    instance = mask_gan({**plan, "norm": "instance"})
    assert any(isinstance(m, nn.InstanceNorm2d) for m in instance.discriminator.modules())
    for option in ({"spectral_norm": True}, {"minibatch_std": True}):
        with pytest.raises(ValueError, match=f"model.discriminator.{next(iter(option))}=True: .*privacy=dp"):
            mask_gan(plan, **option)
    with pytest.raises(ValueError, match="model.r1_gamma=1.0: .*privacy=dp"):
        MaskGAN(**{**private.hparams, "r1_gamma": 1.0})
