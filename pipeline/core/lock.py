"""One writer per run folder: `RUN/.lock`, held with flock(2) and naming its holder.

Every command that writes into a run folder (smoke and train from the moment the folder exists, train
--resume, merge, evaluate) holds the lock until it ends. A second writer is refused at once with one line
naming the holder's pid and command (exit 2). The lock is the kernel's: it goes with the last process
holding the file open, so a holder killed by SIGKILL leaves a stale file behind and no lock, and the next
command takes it over. Axolotl's process inherits the descriptor, so a folder stays locked while an
axolotl that outlived a killed `pipeline` is still writing into it.

The file is never deleted: removing a lock file races with a process that has just opened it.

A process that ends by returning or raising (not by a signal that kills it) releases what it still holds
at exit, so the next command over the same folder (evaluate after train) does not report a takeover.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.core import safeio
from pipeline.core.errors import UserError, printable

NAME = ".lock"


#: the locks this process holds, by folder: a command that locks a folder twice (merge, then its check)
#: is one writer, not two
_HELD: dict[str, RunLock] = {}


class RunLock:
    """An exclusive lock on one run folder; `fd` is passed to children so they hold it too."""

    def __init__(self, folder: Path, fd: int, took_over: dict[str, Any] | None) -> None:
        self.folder, self.fd, self.took_over = folder, fd, took_over
        self.depth = 1

    def release(self) -> None:
        if self.fd < 0:
            return
        self.depth -= 1
        if self.depth > 0:
            return
        _HELD.pop(os.path.realpath(self.folder), None)
        try:
            os.ftruncate(self.fd, 0)  # empty: released cleanly, not by a death
        except OSError:
            pass
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def release_all() -> None:
    """Release every lock this process holds, as its exit does (registered with atexit); for a caller that
    runs a command in its own process and goes on (the test suite's in-process runner)."""
    for held in list(_HELD.values()):
        held.depth = 1
        held.release()


atexit.register(release_all)


def acquire(folder: Path, command: str | None = None) -> RunLock:
    """Lock `folder` for this process, or raise UserError (run-locked) naming the process that holds it."""
    held = _HELD.get(os.path.realpath(folder))
    if held is not None and held.fd >= 0:
        held.depth += 1
        return held
    path = folder / NAME
    try:  # never through a symlink, never blocking on a FIFO: a lock file of another type is refused below
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise _not_a_lock(folder) from None
        raise UserError.at(str(folder), None, "run-unwritable",
                           f"cannot create {NAME} in the run folder ({exc.strerror}); make the runs folder "
                           f"writable") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _not_a_lock(folder)
    if not _try_lock(fd):
        holder = _read(fd)
        os.close(fd)
        who = f"pid {holder.get('pid')}" if holder.get("pid") else "another process"
        what = f" (`{holder['command']}`)" if holder.get("command") else ""
        raise UserError.at(str(folder), None, "run-locked",
                           f"{folder.name} is being written by {who}{what}; wait for it to finish or stop it, "
                           f"then run this again") from None
    previous = _read(fd)  # a clean release empties the file: a name left in it is a holder that died
    stale = previous if previous.get("pid") and previous.get("pid") != os.getpid() else None
    if stale:
        print(printable(f"note: {path} named pid {stale['pid']}, which is gone; its lock is taken over"), file=sys.stderr)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3),
              "command": command or " ".join(["pipeline", *sys.argv[1:]])}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds all the same, only the holder's name is missing
    _HELD[os.path.realpath(folder)] = lock = RunLock(folder, fd, stale)
    return lock


def _not_a_lock(folder: Path) -> UserError:
    return UserError.at(str(folder / NAME), None, "lock-not-file",
                        f"{NAME} is not the regular file pipeline locks the run folder with (a FIFO, a directory or a "
                        f"symlink); remove it, then run this again")


def _try_lock(fd: int, tries: int = 5) -> bool:
    """LOCK_EX, retried briefly: `pipeline runs` peeks at locks with a shared lock for a moment."""
    for i in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if i < tries - 1:
                time.sleep(0.05)
    return False


def holder(folder: Path) -> dict[str, Any] | None:
    """Who holds the folder's lock now, or None when nobody does (read-only: never takes it)."""
    try:
        fd = os.open(folder / NAME, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or a device where the lock goes: nobody holds it
        os.close(fd)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        found = _read(fd)
        os.close(fd)
        return found or {"pid": None}
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return None


def _read(fd: int) -> dict[str, Any]:
    try:
        data = safeio.json_loads(os.pread(fd, 4096, 0) or b"{}")  # ValueError too for a document nested too deep
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
