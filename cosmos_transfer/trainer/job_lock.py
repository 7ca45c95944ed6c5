"""One run per job folder: rank 0 holds an exclusive lock on `<job dir>/job.lock` for the whole run.

Two runs in one job folder (a double submission, a requeue while the old job still runs) would overwrite each
other's checkpoints, `latest_checkpoint.txt` and `metrics.jsonl`, and the second would delete the first's checkpoint
in progress (the clean-up of `*.partial` folders at start). So rank 0 takes the lock before anything is written into
the job folder, and a second run stops at once with JobLockedError naming the holder (host, pid, start time).

The lock is an `fcntl.flock` on the file, which the kernel releases when the holding process ends, however it ends
(even SIGKILL). The file keeps the holder's JSON while the run lasts and is emptied on a clean release; a run that
finds a previous holder's JSON in a file it could lock (that holder died without releasing) takes it over with a
warning naming it. On a file system without flock (the call fails, e.g. Lustre mounted without `-o flock`) the run
goes on unguarded, with a warning saying so (docs/TRAINING.md).
"""

from __future__ import annotations

import atexit
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Callable

from cosmos_transfer.config.errors import UserError

LOCK_FILE = "job.lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}  # the file system cannot lock

_held: dict[str, "JobLock"] = {}  # job folder (real path) -> the lock this process holds on it


class JobLockedError(UserError, RuntimeError):
    """Another live run holds the job folder's lock (exit status 3, so that a scheduler can tell it apart)."""

    exit_code = 3


def _warn(message: str) -> None:
    print(f"[cosmos_transfer] warning: {message}", file=sys.stderr, flush=True)


def describe_holder(text: str) -> str:
    """'host node001, pid 1234, started 2026-12-01 09:00:00 UTC (python scripts/train.py ...)' from the lock's JSON."""
    try:
        holder = json.loads(text)
        where = f"host {holder['host']}, pid {holder['pid']}, started {holder['started']}"
        return where + (f" ({holder['command']})" if holder.get("command") else "")
    except (ValueError, KeyError, TypeError):
        return f"an unreadable holder record {text[:200]!r}"


class JobLock:
    """The exclusive lock of one job folder; `acquire()` takes it or raises JobLockedError, `release()` gives it up."""

    def __init__(self, job_dir: str, warn: Callable[[str], None] = _warn) -> None:
        self.job_dir = os.path.abspath(job_dir)
        self.path = os.path.join(self.job_dir, LOCK_FILE)
        self.warn = warn
        self.supported = True  # False on a file system without flock: the run is not guarded
        self._fd: int | None = None

    def acquire(self) -> "JobLock":
        os.makedirs(self.job_dir, exist_ok=True)
        try:  # never truncate before holding the lock, and never through a link (the file is emptied on release)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            reason = "it is a symbolic link" if error.errno == errno.ELOOP else os.strerror(error.errno or 0)
            raise OSError(error.errno, f"cannot open the job lock {self.path}: {reason}; it must be a regular file "
                          "that this user can write (delete whatever is there)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder(fd)
            os.close(fd)
            raise JobLockedError(
                f"job folder {self.job_dir} is in use by another run: {holder} holds {self.path}. Two runs in one "
                "job folder would overwrite each other's checkpoints. Wait for that run to end (or stop it), or give "
                "this one another job.name."
            ) from None
        except OSError as error:
            os.close(fd)
            if error.errno not in _NO_FLOCK:
                raise
            self.supported = False
            self.warn(f"the file system of {self.job_dir} does not support flock ({os.strerror(error.errno)}): this "
                      "run is not protected against a second run in the same job folder")
            return self
        previous = os.pread(fd, 65536, 0).decode("utf-8", "replace").strip()
        if previous:
            self.warn(f"taking over the lock {self.path} of a run that ended without releasing it: "
                      f"{describe_holder(previous)}")
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    @staticmethod
    def _read_holder(fd: int) -> str:
        # The holder writes its record right after locking: give it a moment before calling it unknown.
        for _ in range(20):
            text = os.pread(fd, 65536, 0).decode("utf-8", "replace").strip()
            if text:
                return describe_holder(text)
            time.sleep(0.05)
        return "a run that has not written its record yet"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Empty the file (a clean end: the next run takes over without a warning) and unlock."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def hold_job_lock(job_dir: str) -> JobLock:
    """Take the lock of `job_dir` for the rest of this process (later calls return the same lock). Rank 0 only.

    Released cleanly when the process exits normally (also after an exception); a process killed outright leaves
    its record, and the next run says it took over from it.
    """
    key = os.path.realpath(job_dir)
    lock = _held.get(key)
    if lock is None:
        lock = JobLock(job_dir).acquire()
        _held[key] = lock
        atexit.register(release_job_lock, job_dir)
    return lock


def release_job_lock(job_dir: str) -> None:
    lock = _held.pop(os.path.realpath(job_dir), None)
    if lock is not None:
        lock.release()
