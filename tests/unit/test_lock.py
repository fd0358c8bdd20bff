"""One writer per run folder (pipeline.core.lock), with real processes holding and dying."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support import wait_until

from pipeline.core import lock
from pipeline.core.errors import UserError

HOLD = """
import sys, time
from pathlib import Path
from pipeline.core import lock
held = lock.acquire(Path(sys.argv[1]), command="pipeline train --resume RUN")
print("held", flush=True)
time.sleep(600)
"""


def holder_process(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_with_the_holders_pid_and_command(tmp_path):
    proc = holder_process(tmp_path)
    try:
        with pytest.raises(UserError) as exc:
            lock.acquire(tmp_path)
        (finding,) = exc.value.findings
        assert finding.rule == "run-locked"
        assert f"pid {proc.pid}" in finding.message and "pipeline train --resume RUN" in finding.message
        assert lock.holder(tmp_path)["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path, capsys):
    proc = holder_process(tmp_path)
    proc.kill()  # SIGKILL: no release, the pid stays written in the file
    proc.wait()
    assert json.loads((tmp_path / lock.NAME).read_text())["pid"] == proc.pid
    assert lock.holder(tmp_path) is None
    with lock.acquire(tmp_path) as held:
        assert held.took_over and held.took_over["pid"] == proc.pid
        assert f"named pid {proc.pid}, which is gone" in capsys.readouterr().err
        assert json.loads((tmp_path / lock.NAME).read_text())["pid"] == os.getpid()
    assert (tmp_path / lock.NAME).read_text() == ""  # released cleanly: nothing to take over next time
    with lock.acquire(tmp_path) as again:
        assert again.took_over is None


def test_a_child_that_outlives_its_parent_keeps_the_folder_locked(tmp_path):
    """Axolotl inherits the lock: a `pipeline` killed outright does not free a folder axolotl still writes."""
    parent = subprocess.Popen([sys.executable, "-c", f"""
import subprocess, sys
from pathlib import Path
from pipeline.core import lock
held = lock.acquire(Path({str(tmp_path)!r}))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], pass_fds=(held.fd,))
print(child.pid, flush=True)
import time; time.sleep(600)
"""], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        parent.kill()
        parent.wait()
        with pytest.raises(UserError):
            lock.acquire(tmp_path)
    finally:
        os.kill(child, 9)
    wait_until(lambda: lock.holder(tmp_path) is None, what="the dead child's lock freed", timeout=30)
    lock.acquire(tmp_path).release()


def test_a_folder_that_cannot_hold_a_lock_file_is_one_line(tmp_path):
    with pytest.raises(UserError) as exc:
        lock.acquire(tmp_path / "missing")
    assert exc.value.findings[0].rule == "run-unwritable"


def test_one_process_that_locks_a_folder_twice_is_one_writer(tmp_path):
    outer = lock.acquire(tmp_path)
    inner = lock.acquire(tmp_path)
    assert inner is outer
    inner.release()
    assert lock.holder(tmp_path)["pid"] == os.getpid()  # still held for the outer use
    proc = subprocess.run([sys.executable, "-c", f"from pathlib import Path; from pipeline.core import lock; "
                           f"lock.acquire(Path({str(tmp_path)!r}))"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode != 0 and "run-locked" in proc.stderr
    outer.release()
    lock.acquire(tmp_path).release()


def test_a_holder_that_exits_normally_leaves_nothing_to_take_over(tmp_path, capsys):
    for ending in ("", "raise SystemExit(3)", "raise RuntimeError('boom')"):
        proc = subprocess.run([sys.executable, "-c", f"from pathlib import Path; from pipeline.core import lock; "
                               f"lock.acquire(Path({str(tmp_path)!r})); {ending}"], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert proc.returncode != 0 or ending == "", proc.stderr
        assert (tmp_path / lock.NAME).read_text() == "", ending
        with lock.acquire(tmp_path) as held:
            assert held.took_over is None
        assert "which is gone" not in capsys.readouterr().err
