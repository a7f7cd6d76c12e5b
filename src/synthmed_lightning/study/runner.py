"""Runs the study's steps as CLI subprocesses, several at a time, in dependency order.

Each step is `python -m synthmed_lightning <its arguments>` with its output in a log file
(`<out>/logs/<step>.log`). Up to `workers` run at once, each with `threads` CPU threads: on a small
CPU machine two single-threaded runs side by side finish sooner than one after the other with two
threads each (PyTorch's small convolutions scale poorly across threads). A failed step stops the
study (the steps already running finish) with one line naming the step and its log.

`<out>/code.json` records the code each finished step ran with (`code_fingerprint`); a resumed study
whose finished steps ran with other code keeps their results and says so in the log and the report.

Steps never outlive the study: on Linux each one is asked to get SIGTERM when the study process
dies (even by SIGKILL), and a study ending by an exception or Ctrl-C terminates the running ones.
"""

import ctypes
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from synthmed_lightning.errors import UserError
from synthmed_lightning.resources import config_dir, experiments_dir
from synthmed_lightning.study.plan import Step
from synthmed_lightning.utils import write_json

log = logging.getLogger(__name__)
_POLL_S = 2.0
_PROGRESS_EVERY_S = 60.0  # a quick-profile step runs 5-30 min in silence: say where the study is every minute


class StudyProgress:
    """The study's overall progress line: steps done, what runs, elapsed time and an ETA.

    The ETA assumes each remaining step takes as long as the finished steps of its stage did on
    average (any finished step when none of its stage has), and that `workers` run side by side.
    A step resumed from a checkpoint ran only part of its work: it counts as done but not as a duration."""

    def __init__(self, total: int, done: int, workers: int, clock=time.perf_counter):
        self.total, self.done, self.workers, self.clock = total, done, workers, clock
        self.start = self.last = clock()
        self.durations: dict[str, list[float]] = {}

    def finished(self, step: Step, seconds: float, resumed: bool = False) -> None:
        self.done += 1
        if not resumed:
            self.durations.setdefault(step.stage, []).append(seconds)

    def _estimate(self, stage: str) -> float | None:
        same = self.durations.get(stage) or [s for times in self.durations.values() for s in times]
        return sum(same) / len(same) if same else None

    def eta_s(self, pending: list[Step], running: dict[str, tuple[float, Step]]) -> float | None:
        """Seconds until the last step ends, or None before any step has finished."""
        now, left = self.clock(), 0.0
        for start, step in running.values():
            estimate = self._estimate(step.stage)
            if estimate is None:
                return None
            left += max(0.0, estimate - (now - start))
        for step in pending:
            estimate = self._estimate(step.stage)
            if estimate is None:
                return None
            left += estimate
        return left / max(1, self.workers)

    def line(self, pending: list[Step], running: dict[str, tuple[float, Step]]) -> str:
        eta = self.eta_s(pending, running)
        return (f"study: {self.done}/{self.total} steps done, running {', '.join(running) or 'nothing'}; "
                f"elapsed {_minutes(self.clock() - self.start)}, "
                f"ETA {_minutes(eta) if eta is not None else 'after the first step'}")

    def maybe_report(self, pending: list[Step], running: dict[str, tuple[float, Step]]) -> None:
        if self.clock() - self.last >= _PROGRESS_EVERY_S:
            self.last = self.clock()
            log.info(self.line(pending, running))


def default_parallelism(cuda: bool, cpus: int | None = None, workers: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker): one run at a time on a GPU; on a CPU up to 4 runs sharing the
    cores. Given `workers`, only the threads are chosen (the cores split between them)."""
    cpus = cpus or os.cpu_count() or 1
    if workers is None:
        workers = 1 if cuda else max(1, min(4, cpus))
    return workers, max(1, cpus // workers)


class StepFailed(UserError):
    """A study step exited with an error (its log file says why)."""


def _command(step: Step) -> list[str]:
    return [sys.executable, "-m", "synthmed_lightning", *step.arguments]


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_STOP_WAIT_S = 10.0  # how long a terminated step may take to exit before it is killed


def _die_with_parent():
    """A `preexec_fn` that makes the child get SIGTERM when this process dies (Linux), else None.

    libc is loaded here, in the parent: the function itself runs in the forked child, where only
    async-signal-safe work belongs. The signal follows the thread that started the child, which
    is the study's main thread here (it lives until the study ends)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _stop(running: dict) -> None:
    """Terminate the running steps (SIGTERM, then SIGKILL after a grace period): a study that
    ends by an error or Ctrl-C leaves no step behind."""
    for process, _, _ in running.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + _STOP_WAIT_S
    for name, (process, _, _) in running.items():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.warning("%s: stopped (the study ended); rerun the same command to continue it", name)


CODE_RECORD = "code.json"  # <out>/code.json: {step name: fingerprint of the code it ran with}


def code_fingerprint() -> str:
    """12 hex digits of a hash over the package's Python files, its configs and the experiments: what a
    step's result depends on besides its command line."""
    digest = hashlib.sha256()
    roots = (Path(__file__).resolve().parents[1], config_dir(), experiments_dir())
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml") and p.is_file()):
            digest.update(f"{root.name}/{path.relative_to(root)}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _warn_other_code(record: dict, done: set, now: str) -> None:
    """A resumed study keeps what its finished steps wrote, even when the code has changed since: say so."""
    other = sorted(name for name in done if record.get(name, now) != now)
    if other:
        log.warning("%d finished step(s) ran with other code than now (%s): %s. Their results are kept; delete "
                    "their run folders to redo them with this code", len(other), now, ", ".join(other))


def run_steps(steps: list[Step], out: Path, workers: int, threads: int, resume_arg=lambda step: []) -> dict[str, float]:
    """Run the unfinished steps; return {step name: wall seconds} of those run now.

    `resume_arg(step)` gives extra arguments for a step that was interrupted before (e.g. ckpt_path=last).
    Each finished step's code fingerprint goes into `<out>/code.json`, so that a study resumed after a
    code change says which results came from which code.
    """
    names = {s.name for s in steps}
    for step in steps:
        unknown = set(step.after) - names
        if unknown:
            raise ValueError(f"step {step.name} waits for unknown steps {sorted(unknown)}")
    done = {s.name for s in steps if s.done(out)}
    total = len(steps)
    for name in sorted(done):
        log.info("%s: already done, skipped", name)
    record_path = out / CODE_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    code = code_fingerprint()
    _warn_other_code(record, done, code)
    pending = [s for s in steps if s.name not in done]
    running: dict[str, tuple[subprocess.Popen, float, Step]] = {}
    resumed: set[str] = set()  # steps started from a checkpoint: their wall time is not a step's duration
    seconds: dict[str, float] = {}
    failed: list[str] = []
    (out / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    preexec = _die_with_parent()
    progress = StudyProgress(total, len(done), workers)
    try:
        while pending or running:
            if not failed:
                for step in [s for s in pending if set(s.after) <= done][: max(0, workers - len(running))]:
                    pending.remove(step)
                    log_path = out / "logs" / f"{step.name}.log"
                    extra = resume_arg(step)
                    if extra:
                        resumed.add(step.name)
                    with open(log_path, "ab") as log_file:
                        process = subprocess.Popen(_command(step) + extra, stdout=log_file,
                                                   stderr=subprocess.STDOUT, env=env, preexec_fn=preexec)
                    running[step.name] = (process, time.perf_counter(), step)
                    log.info("[%d/%d] %s: started (stage=%s, log %s)", total - len(pending), total, step.name,
                             step.stage, log_path)
            elif not running:
                break
            time.sleep(_POLL_S)
            progress.maybe_report(pending, {name: (start, step) for name, (_, start, step) in running.items()})
            for name, (process, start, step) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                seconds[name] = time.perf_counter() - start
                if process.returncode == 0 and step.done(out):
                    done.add(name)
                    record[name] = code
                    write_json(record_path, record)
                    progress.finished(step, seconds[name], resumed=name in resumed)
                    log.info("%s: done in %s (%d of %d steps done)", name, _minutes(seconds[name]), len(done), total)
                else:
                    failed.append(name)
                    log.error("%s failed (exit %s): see %s", name, process.returncode, out / "logs" / f"{name}.log")
    except BaseException:  # an error here, Ctrl-C (KeyboardInterrupt), SystemExit
        _stop(running)
        raise
    if failed:
        last_line = _last_error_line(out / "logs" / f"{failed[0]}.log")
        raise StepFailed(f"study step {failed[0]} failed ({last_line}); log: {out / 'logs' / (failed[0] + '.log')}; "
                         "rerun the same command to continue from there")
    return seconds


def _last_error_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return (errors or lines or ["no output"])[-1][:300]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"
