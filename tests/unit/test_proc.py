"""The one liveness rule (pipeline.core.proc.recorded_alive), as `pipeline runs` and `train --resume` read it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from pipeline.core.proc import recorded_alive
from pipeline.stages import runs, train

HERE = socket.gethostname()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_process_on_this_host_is_judged_by_its_pid():
    assert recorded_alive({"pid": os.getpid(), "host": HERE}) is True
    assert recorded_alive({"pid": _dead_pid(), "host": HERE}) is False


def test_a_missing_host_is_not_this_host():
    dead = _dead_pid()
    assert recorded_alive({"pid": dead}) is None
    assert recorded_alive({"pid": dead, "host": None}) is None
    assert recorded_alive({"pid": dead, "host": "another-machine"}) is None
    assert recorded_alive({"host": HERE}) is None
    assert recorded_alive({"pid": True, "host": HERE}) is None


def test_runs_and_resume_read_the_same_rule():
    dead = _dead_pid()
    for record, shown, resumable_blocked in [
        ({"status": "running", "pid": dead, "host": HERE}, "killed", False),
        ({"status": "running", "pid": dead}, "running", False),  # no host: not told, and not this host's
        ({"status": "running", "pid": os.getppid(), "host": HERE}, "running", True),
        ({"status": "running", "pid": os.getppid(), "host": "another-machine"}, "running", False),
    ]:
        assert runs.status(record) == shown, record
        assert train.is_alive(record) is resumable_blocked, record
