"""A test-only callback that runs inside every DDP rank (`+callbacks.probe._target_=tests.ddp_probe.RankProbe`):
it records what each rank writes and what it trained, so a test can compare the ranks afterwards."""

import json
from pathlib import Path

import lightning as L
import torch


class RankProbe(L.Callback):
    """Per rank, into `out_dir`: `rank<r>.json` with the number of checkpoint files and sample PNGs this
    rank wrote (counted in the project's writers) and a digest of its first training batch, and
    `rank<r>.pt` with the module's parameters at the end of training."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.counts = {"checkpoint": 0, "png": 0}
        self.first_batch = None
        self._installed = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self._installed:
            return
        self._installed = True
        io = trainer.strategy.checkpoint_io
        io.save_checkpoint = self._counting(io.save_checkpoint, "checkpoint")
        from synthmed_lightning.callbacks import sample_grids

        sample_grids.save_png = self._counting(sample_grids.save_png, "png")  # every grid writer's PNGs

    def _counting(self, function, key: str):
        def counted(*args, **kwargs):
            self.counts[key] += 1
            return function(*args, **kwargs)
        return counted

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_batch is None:
            self.first_batch = float(sum(v.double().sum() for v in batch.values() if isinstance(v, torch.Tensor)))

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu().clone() for k, v in pl_module.named_parameters()},
                   self.out_dir / f"rank{trainer.global_rank}.pt")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(
            json.dumps({**self.counts, "first_batch": self.first_batch, "world_size": trainer.world_size}))
