"""Faults during training: a run killed with SIGKILL resumes from its last checkpoint with the same
command plus `ckpt_path=last`; a NaN/Inf loss stops the run and keeps the last good checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch

from helpers import PROJECT_ROOT, SMOKE, assert_ok, assert_one_line_error, run_cli
from synthmed_lightning.callbacks.finite_guard import FiniteGuard
from synthmed_lightning.checkpoints import load_checkpoint
from synthmed_lightning.errors import TrainingError

ITERATIONS, EVERY = 300, 20  # generator iterations; checkpoint interval in optimizer steps (2 per iteration)


def _mask_command(out, *extra: str) -> list[str]:
    return ["stage=mask", *SMOKE, "logger=none", f"hydra.run.dir={out}", "ckpt_path=last",
            f"profile.mask.iterations={ITERATIONS}", "profile.mask.val_every=1000",
            f"callbacks.last_checkpoint.every_n_train_steps={EVERY}", *extra]


@pytest.mark.parametrize("extra", [(), ("privacy=dp", "profile.mask.batch_size=2")], ids=["plain", "dp"])
def test_a_killed_gan_run_resumes_from_its_last_checkpoint(tmp_path, extra):
    """SIGKILL mid-epoch, then the same command: training continues at the checkpoint's global step
    with its optimizer state (Adam's step counts) and EMA state (iterations_done), to the full budget.
    Under DP-SGD the epsilon then counts every iteration, before and after the kill."""
    out = tmp_path / "run"
    last = out / "checkpoints" / "last.ckpt"
    process = subprocess.Popen([sys.executable, "-m", "synthmed_lightning", *_mask_command(out, *extra)], cwd=PROJECT_ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed = load_checkpoint(last, "mask")
    step = killed["global_step"]
    assert 0 < step < 2 * ITERATIONS and step % EVERY == 0
    assert int(killed["state_dict"]["iterations_done"]) == step // 2

    result = run_cli(*_mask_command(out, *extra))
    assert_ok(result)
    assert f"Resuming from {last} at global step {step}" in result.stdout + result.stderr
    final = load_checkpoint(last, "mask")
    assert final["global_step"] == 2 * ITERATIONS
    assert int(final["state_dict"]["iterations_done"]) == ITERATIONS  # the EMA schedule continued
    for optimizer in final["optimizer_states"]:  # Adam's state continued, not restarted at the resume
        assert {int(s["step"]) for s in optimizer["state"].values()} == {ITERATIONS}
    assert (out / "metrics.json").read_text().count(f'"train/resumed_from_step": {step}') == 1
    # ... and it ends where the run would have ended unkilled: the same patches and the same random numbers
    # after the resume (the training loader's checkpointed state, data/loading.py), so the same weights.
    uninterrupted = tmp_path / "uninterrupted"
    assert_ok(run_cli(*_mask_command(uninterrupted, *extra)))
    expected = load_checkpoint(uninterrupted / "checkpoints" / "last.ckpt", "mask")["state_dict"]
    assert expected.keys() == final["state_dict"].keys()
    differing = [name for name, value in expected.items() if not torch.equal(value, final["state_dict"][name])]
    assert not differing, f"resumed at step {step}, {len(differing)} tensors differ, e.g. {differing[:3]}"
    if extra:
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["privacy/steps"] == ITERATIONS and 9.5 < metrics["privacy/epsilon"] <= 10.0 + 1e-6


class _Diverging(L.LightningModule):
    """A one-weight regression whose loss turns NaN at global step `nan_at`."""

    def __init__(self, nan_at: int):
        super().__init__()
        self.nan_at = nan_at
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        if self.global_step >= self.nan_at:
            loss = loss * float("nan")
        self.log("train/loss", loss)
        return loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(64, 1)), batch_size=4)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=4)
    trainer = L.Trainer(max_steps=100, callbacks=[FiniteGuard(), checkpoints], logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    with pytest.raises(TrainingError, match=r"train/loss is nan at global step 7; .*global step 4\), is kept"):
        trainer.fit(_Diverging(nan_at=6))
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def test_a_diverging_run_fails_in_one_line(tmp_path):
    result = run_cli("stage=segment", *SMOKE, "model.lr=inf", f"hydra.run.dir={tmp_path}")
    assert_one_line_error(result, "training diverged: train/", "is nan", "No checkpoint had been saved", "model.lr")
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists() and not (tmp_path / "metrics.json").exists()
