"""Data pipeline throughput (samples/s of each stage's training DataLoader, augmentation included,
with the workers `data.num_workers=auto` picks here) vs what its training step consumes (samples/s of
the Lightning step on the same batches), side by side in this process. Goal: pipeline >= 3x the step."""

import sys

from _common import Clock, setup_threads, write_result
from _stages import STAGES, lightning_clock, subject
from synthmed_lightning.data.loading import loader_settings

# (loader batches timed, training steps timed, warm-up steps)
SIZES = {"segment": (30, 6, 2), "mask": (30, 4, 1), "image": (40, 3, 1)}
GOAL = 3.0


def loader_clock(loader, batches: int) -> Clock:
    clock = Clock(warmup=1)
    iterator = iter(loader)
    for _ in range(batches + 1):
        next(iterator)
        clock.tick()
    return clock


def main(stages=STAGES) -> dict:
    setup_threads()
    results = {}
    for stage in stages:
        s = subject(stage)
        n_batches, steps, warmup = SIZES[stage]
        loader = s.datamodule.train_dataloader()
        data = loader_clock(loader, n_batches)
        step = lightning_clock(s, s.batches(), steps, warmup)
        row = {"batch_size": s.batch_size, "loader": loader_settings(s.datamodule.num_workers, s.datamodule.pin_memory)}
        for kind in ("cpu", "wall"):
            supply, demand = s.batch_size / data.mean_s(kind), s.batch_size / step.mean_s(kind)
            row[kind] = {"pipeline_samples_per_s": supply, "step_samples_per_s": demand, "ratio": supply / demand}
            print(f"data_throughput {stage:8s} {kind:4s} pipeline {supply:8.1f} samples/s  step consumes {demand:7.2f} "
                  f"samples/s  ratio {supply / demand:6.1f}x  goal >= {GOAL}x", flush=True)
        results[stage] = row
    write_result("data_throughput", {"goal": GOAL, "stages": results})
    return results


if __name__ == "__main__":
    main(sys.argv[1:] or STAGES)
