"""Run folders damaged as a disk, a copy or a person damages them: every probe of a hostile run folder and
environment (a FIFO, /dev/zero, a directory or a symlink where pipeline wrote a file, files cut short,
fields of another type, a tampered config.yaml) is one line with its exit code, or the command gets past
its reading as it should.

Each case copies the session's shared trained run (conftest's `tiny_trained`: 72 steps, checkpoints 54
and 72, an adapter) and damages the copy. Commands run in this process (`support.run_here`), bounded
(`support.bounded`: a FIFO that blocked is interrupted and /dev/zero read without end raises the peak
memory, and either fails the test instead of hanging the suite); those that must get past the reading
run with the work after it (axolotl, model loads) replaced by a stand-in that records how far they got.
A few run as a user's shell runs them, in a child process, where the terminal's streams are real.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, TINY, bounded, copy_run, run_here

pytestmark = pytest.mark.faults

#: a refusal ends long before this; a FIFO or /dev/zero read without a bound never would
QUICK = 120
FINDING = re.compile(r"^(?P<where>.+?)(?::\d+)?: (?P<rule>[a-z][a-z0-9]*(?:-[a-z0-9]+)*): ")
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))


def child(*args: str, env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess[str]:
    """The command line in a child process with a timeout (`env`: None unsets a variable)."""
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=QUICK, env={k: v for k, v in full.items() if v is not None})


def here(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command line in this process, bounded in time and memory."""
    with bounded(60, 512):
        return run_here(*args, env=env)


def refused(proc: subprocess.CompletedProcess[str], code: int, rule: str) -> str:
    """Exit `code`, exactly one finding and it is `rule`, no traceback; the finding's line."""
    said = proc.stderr + "\n" + proc.stdout
    assert "Traceback" not in said, said[-3000:]
    assert proc.returncode == code, said[-3000:]
    found = [(m["rule"], line) for line in said.splitlines()
             if (m := FINDING.match(line)) and not line.startswith("warning:")]
    assert [r for r, _ in found] == [rule], said[-3000:]
    return found[0][1]


# --- the runs each case damages ------------------------------------------------------------------------------

@pytest.fixture
def finished(tiny_trained: Path, tmp_path: Path) -> Path:
    """A copy of the session's finished training run."""
    return copy_run(tiny_trained, tmp_path / "runs")


def edit_manifest(run: Path, **fields: Any) -> None:
    m = json.loads((run / "manifest.json").read_text())
    m.update(fields)
    (run / "manifest.json").write_text(json.dumps(m))


def killed(run: Path) -> None:
    """The run as a SIGKILL leaves it: `running` with no summary, its process gone."""
    m = json.loads((run / "manifest.json").read_text())
    m.update(status="running", pid=2**22 + 17)
    m.pop("summary", None)
    (run / "manifest.json").write_text(json.dumps(m))


def interrupted(run: Path) -> None:
    """The run as an interruption after its last checkpoint and before its end leaves it: `interrupted`, and
    no `end` record in its metrics."""
    edit_manifest(run, status="interrupted")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records
                                               if r.get("kind") not in ("end", "summary")))


def replace(path: Path, kind: str) -> None:
    """Put a FIFO, a symlink to /dev/zero, a directory or a symlink to a regular file where a file was."""
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "dir":
        path.mkdir()
    elif kind == "link":
        path.symlink_to(path.parent / "output" / "adapter_config.json")


class Reached(Exception):
    """The command read the run and got as far as the work after the reading."""


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """axolotl's launch, evaluate's model loads and train's attempt replaced; what each was given is kept."""
    from pipeline.core import engine
    from pipeline.stages import evaluate, train

    seen: dict[str, Any] = {}

    def stop(name: str) -> Callable[..., Any]:
        def reached(*args: Any, **kwargs: Any) -> Any:
            seen[name] = kwargs
            raise Reached(name)
        return reached

    monkeypatch.setattr(engine, "run", stop("axolotl"))
    monkeypatch.setattr(evaluate, "measure_all", stop("evaluate"))
    monkeypatch.setattr(train, "attempt", stop("train"))
    return seen


def reaches(*args: str) -> None:
    """The command in this process; it must get past its reading to the stand-in."""
    with pytest.raises(Reached):
        proc = run_here(*args)
        pytest.fail(f"exit {proc.returncode} before the work: {(proc.stderr + proc.stdout)[-3000:]}")


# --- refused in one line, or listed with a warning -----------------------------------------------------------

REFUSED = [
    # (id, how the run is damaged, command, exit code, rule, words the line must hold)
    ("metrics-fifo-evaluate", lambda r: replace(r / "metrics.jsonl", "fifo"), "evaluate", 2, "eval-not-ready",
     "named pipe"),
    ("metrics-zero-evaluate", lambda r: replace(r / "metrics.jsonl", "zero"), "evaluate", 2, "eval-not-ready",
     "/dev/zero"),
    ("metrics-dir-evaluate", lambda r: replace(r / "metrics.jsonl", "dir"), "evaluate", 2, "eval-not-ready",
     "directory"),
    ("metrics-link-evaluate", lambda r: replace(r / "metrics.jsonl", "link"), "evaluate", 2, "eval-not-ready",
     "symbolic link"),
    ("adapter-r-merge", lambda r: edit_json(r / "output" / "adapter_config.json", r="eight"), "merge", 2,
     "merge-not-ready", "r is \"eight\""),
    ("adapter-r-evaluate", lambda r: edit_json(r / "output" / "adapter_config.json", r="eight"), "evaluate", 2,
     "eval-not-ready", "r is \"eight\""),
    ("adapter-weights-cut-evaluate", lambda r: cut(r / "output" / "adapter_model.safetensors", 1000), "evaluate", 2,
     "eval-not-ready", "truncated"),
    ("adapter-weights-empty-merge", lambda r: cut(r / "output" / "adapter_model.safetensors", 0), "merge", 2,
     "merge-not-ready", "too short"),
    ("merged-weights-cut-evaluate", lambda r: merged(r, weights_cut=True), "evaluate", 2, "eval-not-ready",
     "cut short"),
    ("merged-config-broken-evaluate", lambda r: merged(r, config="{"), "evaluate", 2, "eval-not-ready",
     "merged/config.json"),
    ("merged-config-fifo-evaluate", lambda r: merged(r, fifo=True), "evaluate", 2, "eval-not-ready", "named pipe"),
    ("resume-config-bomb", lambda r: (interrupted(r), (r / "config.yaml").write_text(BOMB)), "train --resume", 2,
     "yaml-aliases", "aliases"),
    ("resume-config-missing", lambda r: (interrupted(r), (r / "config.yaml").unlink()), "train --resume", 2,
     "run-config-missing", "not found"),
    ("resume-config-fifo", lambda r: (interrupted(r), replace(r / "config.yaml", "fifo")), "train --resume", 2,
     "run-config-not-file", "named pipe"),
    ("resume-config-tampered", lambda r: (interrupted(r), append(r / "config.yaml", b"trust_remote_code: true\n")),
     "train --resume", 2, "resume-config-changed", "sha256"),
    ("resume-finished-status-number", lambda r: edit_manifest(r, status=12345), "train --resume", 2,
     "resume-finished", "finished"),
    ("resume-finished-status-failed", lambda r: edit_manifest(r, status="failed"), "train --resume", 2,
     "resume-finished", "finished"),
    ("resume-metrics-fifo", lambda r: (interrupted(r), replace(r / "metrics.jsonl", "fifo")), "train --resume", 2,
     "metrics-not-file", "named pipe"),
    ("manifest-truncated-evaluate", lambda r: cut(r / "manifest.json", 40), "evaluate", 2, "manifest-corrupt",
     "not valid JSON"),
    ("manifest-list-evaluate", lambda r: (r / "manifest.json").write_text("[1]"), "evaluate", 2, "manifest-corrupt",
     "JSON list"),
    ("manifest-oversized-merge", lambda r: os.truncate(r / "manifest.json", 65 * 2**20), "merge", 2,
     "manifest-corrupt", "over the limit"),
    ("manifest-fifo-merge", lambda r: replace(r / "manifest.json", "fifo"), "merge", 2, "manifest-corrupt",
     "named pipe"),
]


def edit_json(path: Path, **fields: Any) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))


def cut(path: Path, size: int) -> None:
    os.truncate(path, size)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


def merged(run: Path, *, weights_cut: bool = False, config: str | None = None, fifo: bool = False) -> None:
    """A merged/ folder the last merge verified, then damaged (a copy of the base model stands in for it)."""
    import shutil

    import yaml

    base = Path(yaml.safe_load((run / "config.yaml").read_text())["base_model"])
    shutil.copytree(base, run / "merged")
    edit_manifest(run, merge={"status": "verified", "finished": "2026-01-01T00:00:00+00:00"})
    if weights_cut:
        weights = run / "merged" / "model.safetensors"
        os.truncate(weights, weights.stat().st_size // 2)
    if config is not None:
        (run / "merged" / "config.json").write_text(config)
    if fifo:
        replace(run / "merged" / "config.json", "fifo")


@pytest.mark.parametrize("damage, command, code, rule, words", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_damaged_run_is_one_line(finished, damage, command, code, rule, words):
    damage(finished)
    line = refused(here(*command.split(), str(finished), "--runs-dir", str(finished.parent)), code, rule)
    assert words in line, line


@pytest.mark.parametrize("kind", ["fifo", "zero", "dir", "bytes"])
def test_a_killed_run_with_damaged_metrics_is_still_listed(finished, kind):
    """`pipeline runs` reads a killed run's metrics for its row: damaged, the row stays and a warning says why."""
    killed(finished)
    if kind == "bytes":
        append(finished / "metrics.jsonl", b"\xff\xfe\n")
    else:
        replace(finished / "metrics.jsonl", kind)
    proc = (child if kind == "fifo" else here)("runs", "--runs-dir", str(finished.parent))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (row,) = [line for line in proc.stdout.splitlines() if finished.name in line]
    assert "| killed" in row
    if kind == "bytes":  # the undecodable line is skipped: the steps before it still count
        assert "| 72 " in row, row
    else:
        assert re.search(r"warning: .*metrics\.jsonl: metrics-not-file: ", proc.stderr), proc.stderr


@pytest.mark.parametrize("damage", ["weights", "config"])
def test_a_damaged_merged_folder_is_never_called_verified(finished, damage):
    merged(finished, weights_cut=damage == "weights", config="{" if damage == "config" else None)
    proc = run_here("runs", "--runs-dir", str(finished.parent))
    assert proc.returncode == 0, proc.stderr
    (row,) = [line for line in proc.stdout.splitlines() if finished.name in line]
    assert "| damaged " in row and "verified" not in row, row
    assert json.loads(run_here("runs", "--format", "json", "--runs-dir", str(finished.parent)).stdout)[0][
        "merged"] == "damaged"


def test_an_intact_merged_folder_is_verified(finished):
    """The control of the test above: the same merged/ folder, undamaged, is `verified`."""
    merged(finished)
    proc = run_here("runs", "--runs-dir", str(finished.parent))
    assert "| verified " in next(line for line in proc.stdout.splitlines() if finished.name in line)


# --- gets past its reading ----------------------------------------------------------------------------------

def test_undecodable_metrics_lines_are_skipped_by_evaluate(finished, stand_ins):
    append(finished / "metrics.jsonl", b"\xff\xfe\n")
    reaches("evaluate", str(finished), "--runs-dir", str(finished.parent))
    assert "evaluate" in stand_ins


@pytest.mark.parametrize("fields", [{"summary": "x"}, {"config": None}], ids=["summary-string", "config-null"])
def test_manifest_fields_of_another_type_read_as_absent(finished, stand_ins, fields):
    edit_manifest(finished, **fields)
    reaches("evaluate", str(finished), "--runs-dir", str(finished.parent))


def test_resume_skips_undecodable_metrics_lines_and_a_data_field_of_another_type(finished, stand_ins):
    interrupted(finished)
    append(finished / "metrics.jsonl", b"\xff\xfe\n")
    edit_manifest(finished, data="x")
    reaches("train", "--resume", str(finished), "--runs-dir", str(finished.parent))
    assert stand_ins["train"]["checkpoint"].name == "checkpoint-72"


@pytest.mark.parametrize("file, damage", [("optimizer.pt", "cut"), ("scheduler.pt", "cut"), ("rng_state.pth", "zero"),
                                          ("trainer_state.json", "cut"), ("optimizer.pt", "fifo")])
def test_resume_skips_a_checkpoint_torch_could_not_load(finished, stand_ins, file, damage):
    """The docs: incomplete checkpoints are skipped. A torch file cut short (its zip directory lost), or one
    that is not a file, makes the newest checkpoint incomplete: resume takes the one before, and says why."""
    interrupted(finished)
    path = finished / "output" / "checkpoint-72" / file
    cut(path, 1000) if damage == "cut" else replace(path, damage)
    proc_err = run_here_err("train", "--resume", str(finished), "--runs-dir", str(finished.parent))
    assert stand_ins["train"]["checkpoint"].name == "checkpoint-54"
    assert f"note: skipping checkpoint-72: {file}" in proc_err, proc_err


def run_here_err(*args: str) -> str:
    """What a command that reaches the stand-in printed on stderr before it (support.run_here, unwrapped)."""
    import contextlib
    import io

    from pipeline import cli
    from pipeline.core import lock

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), pytest.raises(Reached):
            cli.main(list(args))
    finally:
        lock.release_all()
    return err.getvalue()


# --- the environment ----------------------------------------------------------------------------------------

def test_a_cache_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "cache").write_text("")
    proc = run_here("smoke", TINY, "--runs-dir", str(tmp_path / "runs"), env={"PIPELINE_CACHE": str(tmp_path / "cache")})
    assert "Not a directory" in refused(proc, 3, "cache-unwritable")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("env", [
    {"HOME": None, "TMPDIR": "/dev/null"},  # HOME unset, TMPDIR a file
    pytest.param({"TMPDIR": "/nonexistent/tmp"}, marks=pytest.mark.long),
], ids=["home-unset-tmpdir-file", "tmpdir-missing"])
def test_home_or_tmpdir_unusable_still_checks(env):
    proc = child("check", TINY, env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize("name, value", [("PIPELINE_MAX_DATA_BYTES", "lots"), ("PIPELINE_MAX_LINE_BYTES", "0")])
def test_a_bad_pipeline_setting_is_one_line(name, value):
    refused(here("check", TINY, env={name: value}), 2, "env-value")


def test_a_run_folder_that_links_to_etc_or_is_a_fifo_is_not_a_run(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "etc").symlink_to("/etc")
    os.mkfifo(runs / "fifo")
    for ref in ("etc", "fifo"):
        refused(here("evaluate", ref, "--runs-dir", str(runs)), 2, "run-missing")
    listing = here("runs", "--runs-dir", str(runs))
    assert listing.returncode == 0 and "Traceback" not in listing.stderr
