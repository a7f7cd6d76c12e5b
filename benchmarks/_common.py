"""What the benchmarks share: configs composed as the CLI composes them, the data (DRIVE when it is
there, the phantom otherwise), thread pinning, timing, and one JSON result file per benchmark.

Benchmarks are not tests: they print ratios measured side by side in one process, so a machine shared
with other work slows both sides alike. `make bench` runs them all and `summary.py` collects them.
"""

import json
import logging
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DRIVE_ROOT = Path(os.environ.get("SYNTHMED_DRIVE", PROJECT_ROOT.parent / "shared" / "data" / "DRIVE"))
OUT = Path(os.environ.get("BENCH_OUT", PROJECT_ROOT / "outputs" / "bench"))
# Torch threads of every in-process measurement (both sides of a ratio use the same).
THREADS = int(os.environ.get("BENCH_THREADS", "1"))


def data_overrides() -> list[str]:
    """DRIVE when it is there (the real sizes), else the built-in phantom at DRIVE's size (the quick profile's)."""
    if (DRIVE_ROOT / "training" / "images").is_dir():
        return ["data=drive", f"data.root={DRIVE_ROOT}"]
    return ["data=phantom"]


def data_name() -> str:
    return "DRIVE" if data_overrides()[0] == "data=drive" else "phantom 565x584"


def compose(*overrides: str, output_dir: Path | None = None):
    """The config `python -m synthmed_lightning <overrides>` would run with, outside a Hydra app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from synthmed_lightning.config import register_configs
    from synthmed_lightning.resources import config_dir

    register_configs()
    output_dir = output_dir or OUT / "runs"
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=[*overrides, f"paths.output_dir={output_dir}"])


def setup_threads() -> None:
    """Every benchmark's start: THREADS threads for torch and OpenCV, Lightning's chatter off."""
    import cv2

    torch.set_num_threads(THREADS)
    cv2.setNumThreads(THREADS)
    logging.getLogger("lightning").setLevel(logging.WARNING)


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cores}-core CPU ({platform.processor() or platform.machine()}), {gpu}"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


class Clock:
    """Per-step end times of a loop, in wall time and in this process's CPU time. On a machine shared
    with other work the wall time of a step includes waiting for a core; the CPU time does not, so
    ratios of CPU time are the steadier measure of work (with one torch thread they are the same
    thing on an idle machine). `mean_s` is the mean step time after `warmup` steps."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def tick(self) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def mean_s(self, kind: str = "cpu") -> float:
        timed = (self.cpu if kind == "cpu" else self.wall)[self.warmup:]
        return (timed[-1] - timed[0]) / (len(timed) - 1) if len(timed) > 1 else float("nan")


def write_result(name: str, result: dict) -> Path:
    """`OUT/<name>.json` with the machine, date, load and data; also printed."""
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "date": date.today().isoformat(), "machine": machine(), "torch_threads": THREADS,
              "load_average_at_end": load_average(), "data": data_name(), "command": " ".join(sys.argv), **result}
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def run_cli(*overrides: str, threads: int = 1) -> dict:
    """`python -m synthmed_lightning <overrides>` in a child process: wall seconds and the child's peak
    resident memory (os.wait4's ru_maxrss: the child and the processes it waited for, e.g. DDP ranks)."""
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "synthmed_lightning", *overrides], cwd=PROJECT_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(overrides)} failed:\n{stderr[-3000:]}")
    return {"wall_s": time.perf_counter() - start, "peak_rss_gib": usage.ru_maxrss / 2**20}
