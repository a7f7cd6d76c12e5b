"""Remembers how the training loss started and ended, so a run can show (and tests assert) it learned."""

import lightning as L
import torch


class LossHistory(L.Callback):
    """Mean of `monitor` over the first and the last `window` training steps."""

    def __init__(self, monitor: str = "train/loss", window: int = 10):
        self.monitor = monitor
        self.window = window
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if isinstance(value, torch.Tensor) and torch.isfinite(value):
            self.values.append(float(value))

    def summary(self) -> dict[str, float]:
        if not self.values:
            return {}
        n = min(self.window, max(1, len(self.values) // 2))
        first, last = self.values[:n], self.values[-n:]
        return {f"{self.monitor}_first": sum(first) / len(first), f"{self.monitor}_last": sum(last) / len(last)}

    def state_dict(self) -> dict:
        return {"values": self.values}

    def load_state_dict(self, state_dict: dict) -> None:
        self.values = list(state_dict.get("values", []))


class GANLossHistory(LossHistory):
    """`LossHistory` for one of several losses: a distinct state key per monitored value, so
    two of them (G and D) can live in one Trainer and resume from a checkpoint."""

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor)
