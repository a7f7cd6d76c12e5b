"""`<out>/study.lock`: one study at a time in a study folder.

Two studies writing the same steps' run folders at once crash each other (both loggers write the
same CSV files). The lock file is created atomically (O_CREAT | O_EXCL) and holds the owner's pid
and host; it is removed when the study ends, also on an error. A study killed outright leaves it
behind: a lock whose pid no longer runs on this host is stale and cleared by the next study.
"""

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from synthmed_lightning.errors import ConfigError

LOCK_NAME = "study.lock"
# A lock file without a readable owner is taken to be half-written by a study starting right now,
# unless it is older than this (then its writer died between creating and writing it).
_UNREADABLE_GRACE_S = 60.0


def _owner(path: Path) -> tuple[int, str] | None:
    """(pid, host) written in the lock file, or None if it holds no such line."""
    try:
        pid, host = path.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _stale(path: Path, owner: tuple[int, str] | None) -> bool:
    if owner is None:
        try:
            return time.time() - path.stat().st_mtime > _UNREADABLE_GRACE_S
        except FileNotFoundError:
            return True
    pid, host = owner
    # On another host (a shared file system) the pid cannot be checked: the lock holds.
    return host == socket.gethostname() and not _running(pid)


def acquire(out: Path) -> Path:
    """Create `<out>/study.lock` for this process, or refuse in one line naming the owner's pid."""
    path = out / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(3):  # a stale lock is cleared and creation retried; a live one refuses
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if not _stale(path, owner):
                who = f"pid {owner[0]} on {owner[1]}" if owner else "a study that is starting"
                raise ConfigError(f"study.out_dir={out} is in use by another study ({who}, lock file {path}): "
                                  "wait for it to end, or use another out_dir") from None
            # Re-read just before removing, so that a lock another study took over meanwhile stays.
            if _owner(path) == owner:
                path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(me)
        return path
    raise ConfigError(f"study.out_dir={out}: cannot take the lock file {path} (other studies keep taking it)")


def release(path: Path) -> None:
    """Remove the lock if it is still this process's (never another study's)."""
    owner = _owner(path)
    if owner is not None and owner == (os.getpid(), socket.gethostname()):
        path.unlink(missing_ok=True)


@contextmanager
def study_lock(out: Path) -> Iterator[Path]:
    path = acquire(out)
    try:
        yield path
    finally:
        release(path)
