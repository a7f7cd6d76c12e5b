"""A study folder is the study's own: unrelated folders, other settings and a second study at once
are refused in one line, and no step outlives the study (stages/study.py, study/lock.py,
study/runner.py). In-process where possible; one CLI run checks the one-line contract."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import PROJECT_ROOT, SMOKE, assert_one_line_error, run_cli
from synthmed_lightning.errors import ConfigError
from synthmed_lightning.stages.study import _check_identity, build_plan, run_study, study_identity
from synthmed_lightning.study.lock import LOCK_NAME, study_lock
from synthmed_lightning.study.plan import Step
from synthmed_lightning.study.runner import run_steps


def _plant(folder: Path) -> dict[str, bytes]:
    """An unrelated folder that looks like a finished study: what it holds, by relative path."""
    files = {"results.json": b'{"mine": 1}\n', "report.md": b"# my notes\n",
             "runs/segment_real/metrics.json": b'{"test/f1_vessel": 0.99}\n'}
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return files


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _identity(cfg) -> dict:
    plan = build_plan(cfg)
    return study_identity(cfg, plan, plan.steps())


# 1. An unrelated non-empty folder is refused; an empty or missing one is fine.

def test_an_unrelated_folder_is_refused_and_left_as_it_was(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    planted = _plant(folder)
    result = run_cli("stage=study", *SMOKE, f"study.out_dir={folder}", cwd=tmp_path)
    assert_one_line_error(result, f"study.out_dir={folder} is not empty and holds no study", "report.md")
    assert _tree(folder) == planted  # nothing overwritten, no study.json or study.lock left in it


def test_an_empty_or_missing_folder_becomes_a_study_from_its_first_step(tmp_path):
    for out in (tmp_path / "empty", tmp_path / "missing" / "deeper"):
        out.mkdir(parents=True)  # as run_study does with a missing one before checking
        with study_lock(out):  # the lock file does not count as foreign content
            _check_identity(out, {"seed": 1})
        assert json.loads((out / "study.json").read_text()) == {"seed": 1}


def test_a_file_in_place_of_the_folder_is_one_line(tmp_path, study_cfg):
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    with pytest.raises(ConfigError, match="study.out_dir=.*a_file is a file, not a folder"):
        run_study(study_cfg(out=blocker))
    assert blocker.read_text() == "mine"


def test_an_unreadable_identity_file_is_one_line(tmp_path):
    (tmp_path / "study.json").write_text("{not json")
    with pytest.raises(ConfigError, match="study.json is unreadable"):
        _check_identity(tmp_path, {"seed": 1})


# 2. Every setting that changes a step's result must match on resumption.

def test_a_study_is_not_resumed_with_another_seed_or_budget(tmp_path, study_cfg):
    out = tmp_path / "out"
    out.mkdir()
    _check_identity(out, _identity(study_cfg()))
    recorded = json.loads((out / "study.json").read_text())
    assert recorded["seed"] == 42 and "seed=42" in recorded["steps"]["train_mask"]
    assert "hydra.run.dir='<out>/runs/train_mask'" in recorded["steps"]["train_mask"]  # a moved folder resumes

    with pytest.raises(ConfigError, match=r"\(seed: 42 there, 7 now\)"):
        _check_identity(out, _identity(study_cfg("seed=7")))
    with pytest.raises(ConfigError, match=r"steps\.\w+: nothing there, profile\.mask\.iterations=50 now"):
        _check_identity(out, _identity(study_cfg("profile.mask.iterations=50")))
    with pytest.raises(ConfigError, match=r"overrides\.image: \[\] there, \['model.l1_weight=0'\] now"):
        _check_identity(out, _identity(study_cfg("study.overrides.image=['model.l1_weight=0']")))
    with pytest.raises(ConfigError, match=r"data\.count: 6 there, 8 now"):
        _check_identity(out, _identity(study_cfg("profile.phantom.count=8")))
    with pytest.raises(ConfigError, match=r"steps\.segment_dual_gan: .*data\.augmentation='strong'"):
        _check_identity(out, _identity(study_cfg("study.synthetic_augmentation=default")))
    assert json.loads((out / "study.json").read_text()) == recorded  # refusals change nothing

    # Where results are logged, and the order of the overrides, do not change any step's result.
    _check_identity(out, _identity(study_cfg("logger=wandb", "run_group=other", "callbacks=default", "seed=42")))


def test_an_older_identity_file_without_the_new_keys_is_refused(tmp_path, study_cfg):
    identity = _identity(study_cfg())
    old = {k: identity[k] for k in ("profile", "dataset", "conditions", "num_synthetic", "overrides")}
    (tmp_path / "study.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match=r"\(seed: not recorded there, 42 now\): use another out_dir"):
        _check_identity(tmp_path, identity)


# 3. One study at a time per folder.

def test_an_unknown_synthetic_augmentation_is_one_line(study_cfg):
    with pytest.raises(ConfigError, match="study.synthetic_augmentation='heavy': expected one of default, strong, none"):
        build_plan(study_cfg("study.synthetic_augmentation=heavy"))


def test_a_second_study_on_the_same_folder_is_refused_naming_the_pid(tmp_path, study_cfg):
    out = tmp_path / "out"
    out.mkdir()
    with study_lock(out) as lock:
        assert lock.read_text().split() == [str(os.getpid()), socket.gethostname()]
        with pytest.raises(ConfigError) as refused:
            run_study(study_cfg())
        message = str(refused.value)
        assert f"study.out_dir={out} is in use by another study (pid {os.getpid()}" in message and "\n" not in message
        assert lock.is_file()  # the refused study leaves the running one's lock alone
    assert not lock.exists()  # removed at the end


def test_the_lock_is_removed_on_error_and_a_stale_one_is_cleared(tmp_path):
    with pytest.raises(RuntimeError), study_lock(tmp_path):
        raise RuntimeError("a step failed")
    assert not (tmp_path / LOCK_NAME).exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer runs: what a study killed with SIGKILL leaves behind
    (tmp_path / LOCK_NAME).write_text(f"{dead.pid} {socket.gethostname()}\n")
    with study_lock(tmp_path) as lock:
        assert lock.read_text().split()[0] == str(os.getpid())


def test_a_refused_folder_gets_no_lock_file(tmp_path, study_cfg):
    _plant(tmp_path)
    with pytest.raises(ConfigError, match="is not empty and holds no study"):
        run_study(study_cfg(out=tmp_path))
    assert not (tmp_path / LOCK_NAME).exists() and not (tmp_path / "study.json").exists()


# 4. No step outlives the study.

def _sleeping_step(pid_file: Path) -> Step:
    code = f"import os, pathlib, time; pathlib.Path(r'{pid_file}').write_text(str(os.getpid())); time.sleep(120)"
    return Step("sleeper", "x", ("-c", code), output="done.txt")


def _gone(pid: int, timeout: float = 15.0) -> bool:
    """True once `pid` has exited (a zombie waiting for a reaper counts as exited)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _wait_for(path: Path, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return int(path.read_text())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux only")
def test_steps_die_with_a_killed_study(tmp_path):
    pid_file = tmp_path / "step.pid"
    study = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import synthmed_lightning.study.runner as runner
        from synthmed_lightning.study.plan import Step
        runner._command = lambda step: [sys.executable, *step.arguments]
        code = {_sleeping_step(pid_file).arguments[1]!r}
        runner.run_steps([Step("sleeper", "x", ("-c", code), output="done.txt")], Path(r"{tmp_path}"), 1, 1)
    """)
    parent = subprocess.Popen([sys.executable, "-c", study], cwd=PROJECT_ROOT)
    try:
        step_pid = _wait_for(pid_file)
        parent.send_signal(signal.SIGKILL)  # no finally, no handler: only the kernel can end the step
        parent.wait()
        assert _gone(step_pid), f"step {step_pid} outlived its study"
    finally:  # whatever happened, leave no process of this test behind
        if parent.poll() is None:
            parent.kill()
        if pid_file.is_file() and not _gone(int(pid_file.read_text()), timeout=0):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_study_ending_by_an_exception_stops_its_steps(tmp_path, monkeypatch):
    pid_file = tmp_path / "step.pid"
    monkeypatch.setattr("synthmed_lightning.study.runner._command", lambda step: [sys.executable, *step.arguments])

    def interrupted(seconds):  # Ctrl-C while the step runs (the runner's poll sleep raises it)
        _wait_for(pid_file)
        raise KeyboardInterrupt

    clock = SimpleNamespace(sleep=interrupted, perf_counter=time.perf_counter, monotonic=time.monotonic)
    monkeypatch.setattr("synthmed_lightning.study.runner.time", clock)
    with pytest.raises(KeyboardInterrupt):
        run_steps([_sleeping_step(pid_file)], tmp_path, workers=1, threads=1)
    step_pid = int(pid_file.read_text())
    try:
        assert _gone(step_pid, timeout=1.0), f"step {step_pid} still runs after the study ended"
    finally:  # leave no process of this test behind
        if not _gone(step_pid, timeout=0):
            os.kill(step_pid, signal.SIGKILL)
