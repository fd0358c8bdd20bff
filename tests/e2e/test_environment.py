"""Faults of the environment, as a user's shell makes them: standard output on a full disk or closed, the
working folder deleted, an ASCII-only output encoding or locale, names longer than the file system allows.
Each is one line on whichever stream still works, with its documented exit code; a run that trained is
recorded as it ended whatever happened to its terminal. Real child processes: the streams must be the
process's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, TINY

pytestmark = pytest.mark.faults


def pipeline(*args: str, stdout: int | None = subprocess.PIPE, cwd: Path = ROOT, close: tuple[int, ...] = (),
             env: dict[str, str] | None = None, gone: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline ARGS` with its stdout where asked, the descriptors `close` closed, and the working
    folder `gone` removed once the child is in it."""
    def before() -> None:
        for fd in close:
            os.close(fd)
        if gone is not None:
            os.rmdir(gone)

    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=gone or cwd, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=900, preexec_fn=before,
                          env={**os.environ, **(env or {})})


def one_line(proc: subprocess.CompletedProcess[str], code: int, rule: str) -> str:
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == code, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if f": {rule}: " in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def test_stdout_on_a_full_disk_is_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        proc = pipeline("runs", "--runs-dir", str(tmp_path), stdout=full.fileno())
    assert "No space left on device" in one_line(proc, 3, "output-unwritable")


def test_stdout_closed_is_one_line(tmp_path):
    proc = pipeline("runs", "--runs-dir", str(tmp_path), stdout=None, close=(1,))
    assert "closed" in one_line(proc, 3, "output-unwritable")


def test_both_streams_unusable_still_exits_with_the_code(tmp_path):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "pipeline", "runs", "--runs-dir", str(tmp_path)], cwd=ROOT,
                              stdout=full.fileno(), stderr=full.fileno(), timeout=300)
    assert proc.returncode == 3


def test_a_deleted_working_folder_is_one_line(tmp_path):
    (tmp_path / "here").mkdir()
    proc = pipeline("check", "x.yaml", gone=tmp_path / "here")
    one_line(proc, 2, "cwd-missing")


@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii"}, {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}],
                         ids=["pythonioencoding-ascii", "lc-all-c"])
def test_an_ascii_only_terminal_gets_escapes(env, tmp_path):
    runs = tmp_path / "r\u00e9sum\u00e9s \u2192 runs"
    (runs / "20260101-000000-caf\u00e9-train").mkdir(parents=True)
    (runs / "20260101-000000-caf\u00e9-train" / "manifest.json").write_text(
        json.dumps({"run": "x", "stage": "train", "status": "succeeded", "config": {"path": "/p/\u00e9t\u00e9.yaml"}}))
    proc = pipeline("runs", "--runs-dir", str(runs), env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "caf" in proc.stdout


@pytest.mark.long
def test_a_smoke_whose_table_cannot_be_printed_is_recorded_as_it_ended(tmp_path):
    """The run trains; its table goes to a full disk: one line, exit 3, and the manifest says succeeded."""
    with open("/dev/full", "w") as full:
        proc = pipeline("smoke", TINY, "--max-steps", "2", "--runs-dir", str(tmp_path / "runs"), stdout=full.fileno())
    assert "No space left on device" in one_line(proc, 3, "output-unwritable")
    (manifest,) = (tmp_path / "runs").glob("*/manifest.json")
    assert json.loads(manifest.read_text())["status"] == "succeeded"
