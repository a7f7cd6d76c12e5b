"""Speed options that are not Trainer arguments (`speed.*`, conf/speed/default.yaml).

Mixed precision is a Trainer argument (`trainer.precision=bf16-mixed | 16-mixed`; Lightning turns
16-mixed into bf16-mixed on CPU). The rest is applied by one callback that `build_trainer` gives every
stage that runs a Trainer, so the LightningModules stay free of speed code.
"""

import lightning as L
import torch

from synthmed_lightning.errors import ConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class SpeedOptions(L.Callback):
    """`channels_last`: weights and 4-D input batches in NHWC memory layout, the layout tensor-core
    GPUs (bf16/16-mixed) and oneDNN CPUs run convolutions fastest in; results are equal up to rounding.

    `compile`: each network of the module (its children that hold parameters: net, generator,
    discriminator, ...) compiled in place with torch.compile (`nn.Module.compile`), which keeps the
    state-dict keys, so checkpoints stay interchangeable with uncompiled runs. The first steps (and each
    new input shape, e.g. whole-image validation) pay the compilation; worth it for long runs only.
    `compile_backend`: inductor (generated kernels, the fast one); aot_eager traces the same graphs
    without generating code: a quick check that a model compiles (what the tests use).
    """

    def __init__(self, channels_last: bool = False, compile: bool = False, compile_mode: str = "default",
                 compile_backend: str = "inductor"):
        for key, value in (("channels_last", channels_last), ("compile", compile)):
            if not isinstance(value, bool):
                raise ConfigError(f"speed.{key}={value!r}: expected true or false")
        if compile_backend not in torch._dynamo.list_backends(exclude_tags=()):
            raise ConfigError(f"speed.compile_backend={compile_backend!r}: expected one of "
                              f"{', '.join(torch._dynamo.list_backends())} (torch._dynamo.list_backends())")
        if compile_mode not in COMPILE_MODES:
            raise ConfigError(f"speed.compile_mode={compile_mode!r}: expected one of {', '.join(COMPILE_MODES)}")
        self.channels_last = channels_last
        self.compile = compile
        self.compile_mode = compile_mode
        self.compile_backend = compile_backend

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Called before the strategy moves and wraps the module (DDP), once per fit/validate/test.
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
        if self.compile:
            for network in networks(pl_module):
                if getattr(network, "_compiled_call_impl", None) is None:
                    network.compile(mode=self.compile_mode if self.compile_backend == "inductor" else None,
                                    backend=self.compile_backend)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.channels_last and isinstance(batch, dict):
            for key, value in batch.items():
                if isinstance(value, torch.Tensor) and value.ndim == 4 and value.is_floating_point():
                    batch[key] = value.contiguous(memory_format=torch.channels_last)


def networks(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The module's direct children that hold parameters (not metrics or other stateful helpers)."""
    return [child for child in module.children() if next(child.parameters(), None) is not None]


def speed_options(settings) -> SpeedOptions:
    """The callback for a `speed` config node (None: every option off)."""
    settings = dict(settings or {})
    known = ("channels_last", "compile", "compile_mode", "compile_backend")
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(f"unknown setting speed.{unknown[0]}: expected one of {', '.join(known)}")
    return SpeedOptions(**settings)
