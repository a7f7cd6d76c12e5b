"""Scaling on CPU processes: the segment stage's training step (quick profile: U-Net base 16, batch 16
of 96-px patches per process) with `trainer=ddp_cpu trainer.devices=2` (one torch thread per process)
vs one process with one thread and with two threads, each run through the CLI as a user runs it.
Step times are the runs' own `time/batch_s` (median wall time per batch after warm-up, rank 0),
so start-up, validation and test are excluded. With DDP each step trains 2 x 16 samples.
On a 2-core machine shared with other work this shows the cost of gradient all-reduce more than a
speed-up: the figures are reported as measured."""

import json

from _common import OUT, data_overrides, write_result
from _common import run_cli as run

STEPS = 20
COMMON = ("stage=segment", "profile=quick", *data_overrides(), "callbacks=minimal", "logger=none",
          f"trainer.max_steps={STEPS}", "+trainer.limit_val_batches=0", "+trainer.limit_test_batches=1")
RUNS = {
    "1 process x 1 thread": ((), 1, 1),
    "1 process x 2 threads": ((), 2, 1),
    "ddp_cpu 2 processes x 1 thread": (("trainer=ddp_cpu", "trainer.devices=2"), 1, 2),
}


def main() -> dict:
    results = {}
    for name, (extra, threads, processes) in RUNS.items():
        out = OUT / "ddp_scaling" / name.replace(" ", "_")
        run(*COMMON, *extra, f"hydra.run.dir={out}", threads=threads)
        metrics = json.loads((out / "metrics.json").read_text())
        step_s = metrics["time/batch_s"]
        samples = 16 * processes / step_s
        results[name] = {"step_s": step_s, "samples_per_s": samples, "processes": processes, "threads_per_process": threads}
        print(f"ddp_scaling {name:32s} step {step_s * 1000:7.1f} ms  {samples:6.1f} samples/s", flush=True)
    base = results["1 process x 1 thread"]["samples_per_s"]
    for row in results.values():
        row["throughput_vs_1x1"] = row["samples_per_s"] / base
    write_result("ddp_scaling", {"steps": STEPS, "runs": results})
    return results


if __name__ == "__main__":
    main()
