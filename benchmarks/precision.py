"""bf16 autocast vs float32 on this machine's CPU (or GPU): the plain training step of each stage
(benchmarks/_stages.py) at the quick profile's batch and resolution, both sides in this process,
rounds alternating. The quick and paper profiles train the U-Net and Stage II in bf16 only where the
machine computes it natively (`${fast_precision:}`, synthmed_lightning/config.py); this measures what
that buys. Printed ratio: float32 step time / bf16 step time (> 1: bf16 is faster)."""

import sys
from functools import partial

from _common import THREADS, median, setup_threads, write_result
from _stages import STAGES, alternate, plain_clock

from synthmed_lightning.config import fast_precision

STEPS = {"segment": (12, 3), "mask": (8, 2), "image": (6, 2)}
ROUNDS = 3


def main(stages=STAGES) -> dict:
    setup_threads()
    results = {}
    for stage in stages:
        sides = {precision: partial(plain_clock, precision=precision) for precision in ("32-true", "bf16-mixed")}
        s, clocks = alternate(stage, *STEPS[stage], ROUNDS, sides)
        fp32 = median([c.mean_s("cpu") for c in clocks["32-true"]])
        bf16 = median([c.mean_s("cpu") for c in clocks["bf16-mixed"]])
        results[stage] = {"batch_size": s.batch_size, "fp32_step_s": fp32, "bf16_step_s": bf16, "ratio": fp32 / bf16}
        print(f"precision {stage:8s} fp32 {fp32 * 1000:8.1f} ms  bf16 {bf16 * 1000:8.1f} ms  ratio (fp32 / bf16 time) "
              f"{fp32 / bf16:.2f}", flush=True)
    write_result("precision", {"threads": THREADS, "fast_precision": fast_precision(), "stages": results})
    return results


if __name__ == "__main__":
    main(sys.argv[1:] or STAGES)
