"""Lightning's training-step rate of each stage vs a plain PyTorch loop of the same network, batch and
resolution (benchmarks/_stages.py), side by side in this process: rounds alternate plain and Lightning,
and the median of each side's per-round mean step time is compared, in CPU time (the headline: steady
on a shared machine) and in wall time. Goal: ratio >= 0.95."""

import sys

from _common import THREADS, median, setup_threads, write_result
from _stages import STAGES, alternate, lightning_clock, plain_clock

# (timed steps, warm-up steps) per round; rounds alternate the order of the two sides.
STEPS = {"segment": (15, 3), "mask": (8, 2), "image": (5, 2)}
ROUNDS = 3
GOAL = 0.95


def main(stages=STAGES) -> dict:
    setup_threads()
    results = {}
    for stage in stages:
        steps, warmup = STEPS[stage]
        s, clocks = alternate(stage, steps, warmup, ROUNDS, {"plain": plain_clock, "lightning": lightning_clock})
        row = {"batch_size": s.batch_size, "steps_per_round": steps, "warmup": warmup, "rounds": ROUNDS}
        for kind in ("cpu", "wall"):
            per_round = {side: [c.mean_s(kind) for c in cs] for side, cs in clocks.items()}
            plain_s, lightning_s = median(per_round["plain"]), median(per_round["lightning"])
            row[kind] = {"plain_step_s": plain_s, "lightning_step_s": lightning_s, "ratio": plain_s / lightning_s,
                         "rounds_plain_s": per_round["plain"], "rounds_lightning_s": per_round["lightning"]}
            print(f"step_rate {stage:8s} {kind:4s} plain {plain_s * 1000:8.1f} ms  lightning {lightning_s * 1000:8.1f} ms  "
                  f"ratio (Lightning rate / plain rate) {plain_s / lightning_s:.3f}  goal >= {GOAL}", flush=True)
        results[stage] = row
    write_result("step_rate", {"goal": GOAL, "threads": THREADS, "stages": results})
    return results


if __name__ == "__main__":
    main(sys.argv[1:] or STAGES)
