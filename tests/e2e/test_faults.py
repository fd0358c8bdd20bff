"""Fault injection: hostile input, concurrent writers, signals, full and read-only disks, damaged files.

Every case runs the real command line from a copy of the project (the user's configs and data) with an
earlier run in the runs folder: a refusal in this process (`pipeline.cli.main`, from the project folder,
as a user's shell would call it), runs, signals and writers in child processes. Each asserts four things: the documented exit code; one
line naming what is wrong (`path:line: rule: ...`), never a traceback; nothing half-written (no run
folder is left that the command could not finish); and the user's files and the earlier run are byte for
byte what they were (sha256 of every file before and after). Hostile input must also end quickly: every
child has a timeout, so a hang fails the test instead of the suite.

Full and read-only disks are real: a small tmpfs, and a read-only bind mount. Both need root (CI runs as
root here); elsewhere those tests skip with the reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support import ROOT, TINY, copy_run, mount, run_here, run_ok, wait_until
from support import tmpfs as support_tmpfs

from pipeline.core import gpus, runs

pytestmark = pytest.mark.faults

TRAIN_ROWS = "data/processed/visions_training.jsonl"
#: a hostile input must be refused long before this (the bomb hung check for ever; the FIFO too)
QUICK = 240
FINDING = re.compile(r"^(?P<where>.+?)(?::\d+)?: (?P<rule>[a-z][a-z0-9]*(?:-[a-z0-9]+)*): ")
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))


# --- what every case asserts --------------------------------------------------------------------------------

def fingerprint(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (and what each other entry is), to compare before and after."""
    out: dict[str, str] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if p.is_symlink() or not p.is_file():
                    out[str(p)] = "link" if p.is_symlink() else ("dir" if p.is_dir() else "special")
                else:
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def findings(stderr: str) -> list[tuple[str, str]]:
    return [(m["rule"], line) for line in stderr.splitlines()
            if (m := FINDING.match(line)) and not line.startswith(("warning:", "note:"))
            and not line.endswith("[warning]")]  # check's own listing marks warnings at the end


def assert_refused(proc: subprocess.CompletedProcess[str], code: int, rule: str) -> str:
    """The exit code, exactly one finding line and it is `rule`, no traceback; returns that line.

    (`pipeline check` prints its findings on stdout, the other commands on stderr: both are read.)"""
    said = proc.stderr + "\n" + proc.stdout
    assert "Traceback" not in said, said[-3000:]
    assert proc.returncode == code, said[-3000:]
    found = findings(said)
    assert [r for r, _ in found] == [rule], said[-3000:]
    return found[0][1]


class Project:
    """A user's project: configs/ and data/ copied from the repository, a runs folder with one earlier run."""

    def __init__(self, root: Path, runs_dir: Path, earlier: Path) -> None:
        self.root, self.runs = root, runs_dir
        for part in ("configs", "data"):
            shutil.copytree(ROOT / part, root / part)
        runs_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(earlier, runs_dir / earlier.name, symlinks=True)
        self.earlier = runs_dir / earlier.name

    def snapshot(self) -> dict[str, str]:
        return fingerprint(self.root / "configs", self.root / "data", self.earlier)

    def entries(self) -> set[str]:
        return {p.name for p in self.runs.iterdir()} if self.runs.is_dir() else set()

    def cli(self, *args: str, timeout: int = QUICK, env: dict[str, str] | None = None,
            runs_dir: bool = True) -> subprocess.CompletedProcess[str]:
        more = ["--runs-dir", str(self.runs)] if runs_dir else []
        return subprocess.run([sys.executable, "-m", "pipeline", *args, *more], cwd=self.root,
                              env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)

    def refuse(self, *args: str, env: dict[str, str] | None = None,
               runs_dir: bool = True) -> subprocess.CompletedProcess[str]:
        """The command line in this process, from the project folder: for input that must be refused before
        anything starts (a child process would only add its interpreter's start-up)."""
        more = ["--runs-dir", str(self.runs)] if runs_dir else []
        return run_here(*args, *more, cwd=self.root, env=env)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "pipeline", *args, "--runs-dir", str(self.runs)],
                                cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def new_runs(self, before: set[str]) -> list[Path]:
        return sorted(self.runs / n for n in self.entries() - before)


@pytest.fixture(scope="module")
def earlier(tiny_smoke) -> Path:
    """A real earlier run (the session's tiny smoke) that no later command may touch."""
    return tiny_smoke[0]


@pytest.fixture(scope="module")
def trained(tiny_trained) -> Path:
    """A real finished training run with its adapter, copied by the tests that damage it."""
    return tiny_trained


@pytest.fixture
def project(tmp_path: Path, earlier: Path) -> Project:
    return Project(tmp_path / "project", tmp_path / "project" / "runs", earlier)


def hostile(project: Project, args: list[str], code: int, rule: str, **kw: object) -> str:
    """Run one hostile command; assert the refusal, that nothing was written, that nothing was changed."""
    before, entries = project.snapshot(), project.entries()
    proc = project.refuse(*args, **kw)  # type: ignore[arg-type]
    line = assert_refused(proc, code, rule)
    assert project.entries() == entries, f"left behind: {project.new_runs(entries)}"
    assert project.snapshot() == before
    return line


def edit(project: Project, old: str, new: str, name: str = "hostile.yaml") -> str:
    text = (project.root / TINY).read_text()
    assert old in text
    (project.root / "configs" / name).write_text(text.replace(old, new))
    return f"configs/{name}"


# --- hostile configs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["check", "smoke"])
def test_an_alias_bomb_is_refused_at_once(project, command):
    (project.root / "configs" / "bomb.yaml").write_text(BOMB)
    line = hostile(project, [command, "configs/bomb.yaml"], 2, "yaml-aliases",
                   runs_dir=command == "smoke")
    assert line.startswith("configs/bomb.yaml:1: yaml-aliases: ")


@pytest.mark.parametrize("make, rule", [
    (lambda p: os.mkfifo(p), "config-not-file"),
    (lambda p: p.write_bytes(b"base_model: pipeline://tiny-llama\nlr: \xff\xfe\n"), "config-encoding"),
    (lambda p: p.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256))), "config-encoding"),
    (lambda p: p.write_text("# padding\n" * 120_000), "config-too-large"),
    (lambda p: p.mkdir(), "config-not-file"),
], ids=["fifo", "latin1", "binary", "oversized", "directory"])
def test_a_config_that_is_not_a_small_utf8_file_is_one_line(project, make, rule):
    make(project.root / "configs" / "odd.yaml")
    hostile(project, ["smoke", "configs/odd.yaml"], 2, rule)


def test_nan_settings_are_refused(project):
    cfg = edit(project, "weight_decay: 0.0", "weight_decay: .nan")
    assert "weight_decay is NaN" in hostile(project, ["smoke", cfg], 2, "config-nan")
    hostile(project, ["smoke", TINY, "--set", "weight_decay=nan"], 2, "config-nan")


@pytest.mark.parametrize("dotted", ["datasets.b.c=1", "datasets.5.path=x", "base_model.x=1"])
def test_a_set_path_that_does_not_exist_is_one_line(project, dotted):
    assert f"--set {dotted.split('=')[0]}" in hostile(project, ["smoke", TINY, "--set", dotted], 2, "override-path")


# --- hostile data -------------------------------------------------------------------------------------------

def replace_rows(project: Project, make) -> None:
    rows = project.root / TRAIN_ROWS
    rows.unlink()
    make(rows)


@pytest.mark.parametrize("make, rule", [
    (lambda p: os.mkfifo(p), "data-not-file"),
    (lambda p: p.symlink_to("/dev/zero"), "data-not-file"),
    (lambda p: p.mkdir(), "data-not-file"),
    (lambda p: p.write_bytes('{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'.encode("latin-1")),
     "data-encoding"),
    (lambda p: p.write_text(json.dumps({"messages": [{"role": "user", "content": "x" * (5 * 2**20)},
                                                     {"role": "assistant", "content": "y"}]}) + "\n"),
     "data-line-too-long"),
    (lambda p: p.write_text('{"messages": [{"role": "user", "content": "a"}, '
                            '{"role": "assistant", "content": NaN}]}\n'), "data-json"),
    (lambda p: p.write_text('{"messages": [{"role": "user", "content": "a"}, '
                            '{"role": "assistant", "content": 5}]}\n'), "data-row"),
], ids=["fifo", "dev-zero", "directory", "latin1", "line-5MiB", "nan-content", "number-content"])
@pytest.mark.parametrize("command", ["check", "smoke"])
def test_a_dataset_that_cannot_be_read_safely_is_one_line(project, make, rule, command):
    replace_rows(project, make)
    before = project.snapshot()
    hostile(project, [command, TINY], 2, rule, runs_dir=command == "smoke")
    assert project.snapshot() == before


def test_a_system_file_named_as_a_dataset_is_an_error_not_a_warning(project):
    cfg = edit(project, TRAIN_ROWS, "/etc/passwd")
    hostile(project, ["smoke", cfg], 2, "data-format")


def test_a_dataset_over_the_size_limit(project):
    # lowered to 10 kB: the 22 kB training file is over it, the 2 kB validation file is not
    assert "over the limit of 9.766 KiB" in hostile(project, ["smoke", TINY], 2, "data-too-large",
                                                    env={"PIPELINE_MAX_DATA_BYTES": "10000"})


# --- arguments checked before anything starts ---------------------------------------------------------------

def test_arguments_are_checked_before_anything_starts(project):
    hostile(project, ["smoke", TINY, "--max-steps", "-1"], 2, "max-steps")
    have = gpus.count()
    for command in ("smoke", "train"):  # one GPU more than there are (and never 1: a CPU run takes --gpus 1)
        line = hostile(project, [command, TINY, "--gpus", str(max(have + 1, 2))], 2, "gpus")
        assert f"this machine has {have} usable GPU" in line


@pytest.mark.parametrize("target", [TINY, TRAIN_ROWS, "data", "README-user.md"])
def test_json_never_lands_on_an_input_or_a_folder(project, target):
    (project.root / "README-user.md").write_text("my notes\n")
    before = fingerprint(project.root / "README-user.md")
    hostile(project, ["smoke", TINY, "--json", target], 2, "json-target")
    assert fingerprint(project.root / "README-user.md") == before


# --- honest outcomes ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_during_a_smoke_is_interrupted_never_success(project, step_reached):
    before, entries = project.snapshot(), project.entries()
    proc = project.start("smoke", TINY, "--max-steps", "40")
    step_reached(project.runs, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    (run,) = [p for p in project.new_runs(entries) if p.is_dir()]
    manifest = json.loads((run / "manifest.json").read_text())
    result = json.loads((run / "smoke.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["exit_code"] == 130
    assert result["ok"] is False and result["steps"] < 40
    assert project.snapshot() == before


@pytest.mark.slow
def test_edited_data_is_what_trains_and_the_manifest_says_so(project):
    """axolotl keys its prepared data by settings and tokenizer name: the old rows used to train. The
    project's earlier run (the session's smoke of the same config) prepared the rows as shipped, in the
    shared cache: an edited file must not load them."""
    rows = project.root / TRAIN_ROWS
    old = Path(yaml.safe_load((project.earlier / "config.yaml").read_text())["dataset_prepared_path"])
    assert any(old.iterdir()), "the shipped rows were prepared before the edit"

    rows.write_text("".join(rows.read_text().splitlines(keepends=True)[:6]))  # 36 rows down to 6
    entries = project.entries()
    proc = project.cli("smoke", TINY, "--max-steps", "1", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = [p for p in project.new_runs(entries) if p.is_dir()]
    manifest, log = json.loads((run / "manifest.json").read_text()), (run / "axolotl.log").read_text()
    assert manifest["data"][str(rows)] == hashlib.sha256(rows.read_bytes()).hexdigest()
    assert "0/6 [" in log and "0/36 [" not in log  # axolotl tokenised the 6 rows the manifest names
    assert "Unable to find prepared dataset" in log  # prepared afresh, not loaded under the old key
    new = Path(yaml.safe_load((run / "config.yaml").read_text())["dataset_prepared_path"])
    assert new.parent == old.parent and new != old  # the same cache, another content key
    # that unchanged data reuses its prepared rows is shown by test_smoke's same-seed pair


def train_losses(run: Path) -> dict[int, float]:
    """Step -> training loss from a run's metrics.jsonl; fails if a step was logged twice (two writers)."""
    records = runs.read_jsonl(run / "metrics.jsonl")
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


@pytest.mark.slow
@pytest.mark.long
def test_sigterm_then_two_resumes_at_once_one_refused_the_other_equals_an_uninterrupted_run(project, cli, tmp_path,
                                                                                          step_reached):
    """`pipeline train` for real, two epochs (36 steps, a checkpoint at the end of each): SIGTERM past the
    first checkpoint; the holder's lock left as if it had died holding it; two `--resume` at once. One is
    refused, the other takes the lock over, resumes from checkpoint-18 and ends with the losses of a run
    that was never stopped (optimizer, scheduler, RNG and data order restored), each step logged once."""
    two_epochs = ("--set", "num_epochs=2")
    whole = train_losses(run_ok(cli, tmp_path / "whole", "train", TINY, *two_epochs))
    assert sorted(whole) == list(range(1, 37))
    assert whole[36] < whole[1] - 2.0  # it visibly learns: ~7.6 -> ~4.8 on the tiny model

    entries = project.entries()
    first = project.start("train", TINY, *two_epochs)
    stopped_at = step_reached(project.runs, 21, first, timeout=300)  # past the checkpoint at step 18
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 130, err[-3000:]
    (run,) = project.new_runs(entries)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["last_checkpoint"] == "checkpoint-18"
    assert f"pipeline train --resume {run}" in err
    assert 21 <= stopped_at < 36
    (run / ".lock").write_text(json.dumps({"pid": 2**22 + 7, "command": "pipeline train"}))  # died holding it
    before = project.snapshot()

    racers = [project.start("train", "--resume", str(run)) for _ in range(2)]
    outs = [p.communicate(timeout=900)[1] for p in racers]
    codes = sorted(p.returncode for p in racers)
    assert codes == [0, 2], [o[-2000:] for o in outs]
    loser = outs[[p.returncode for p in racers].index(2)]
    winner = outs[[p.returncode for p in racers].index(0)]
    # refused by the lock, or (if it looked later) by the manifest the winner had already marked running
    assert [r for r, _ in findings(loser)] in (["run-locked"], ["resume-running"]) and "Traceback" not in loser
    assert "named pid 4194311, which is gone; its lock is taken over" in winner
    assert "from checkpoint-18 (step 18)" in winner
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["summary"]["steps"] == 36
    assert [a["status"] for a in manifest["attempts"]] == ["interrupted", "succeeded"]
    assert len(manifest["resumes"]) == 1 and manifest["resumes"][0]["from_step"] == 18
    # the steps the stopped attempt ran past its checkpoint were re-run; their first logs are archived
    archived = [r["step"] for r in runs.read_jsonl(run / "metrics.attempt-1.jsonl") if r["kind"] == "train"]
    assert max(archived) >= 21

    resumed = train_losses(run)  # each step once: the refused resume appended nothing
    assert sorted(resumed) == sorted(whole)
    for step in whole:
        assert math.isclose(resumed[step], whole[step], rel_tol=1e-5, abs_tol=1e-5), (step, resumed[step],
                                                                                        whole[step])
    assert (run / "output" / "adapter_model.safetensors").is_file()
    assert project.snapshot() == before


# --- full and read-only disks -------------------------------------------------------------------------------

@pytest.fixture(name="tmpfs")
def sixteen_mib_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB filesystem that can be filled (needs root, as in CI)."""
    with support_tmpfs(tmp_path / "small-disk", "16m") as where:
        yield where


def fill(disk: Path) -> Path:
    """Fill the filesystem to the last byte; the file returned gives the space back when deleted."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)  # unbuffered: nothing is left to flush on close
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free < 4096
    return filler


def project_on(disk: Path, tmp_path: Path, earlier: Path) -> Project:
    return Project(tmp_path / "project", disk / "runs", earlier)


@pytest.mark.slow
@pytest.mark.long
def test_a_disk_that_fills_during_training_marks_the_run_failed_and_resume_works_after(tmpfs, tmp_path, earlier,
                                                                                         step_reached):
    project = project_on(tmpfs, tmp_path, earlier)
    before, entries = project.snapshot(), project.entries()
    proc = project.start("train", TINY, "--set", "num_epochs=2")
    step_reached(project.runs, 3, proc)
    filler = fill(tmpfs)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 3, err[-3000:]
    assert "Traceback" not in err
    (run,) = project.new_runs(entries)
    manifest = json.loads((run / "manifest.json").read_text())  # written from the folder's reserve
    assert manifest["status"] == "failed" and manifest["exit_code"] == 3
    assert f"pipeline train --resume {run}" in err.splitlines()[-1]
    assert project.snapshot() == before

    filler.unlink()  # space is back
    proc2 = project.cli("train", "--resume", str(run), timeout=900)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["summary"]["steps"] == 36
    assert [a["status"] for a in manifest["attempts"]] == ["failed", "succeeded"]
    assert project.snapshot() == before


def test_a_full_disk_before_a_run_leaves_nothing(tmpfs, tmp_path, earlier):
    project = project_on(tmpfs, tmp_path, earlier)
    fill(tmpfs)
    line = hostile(project, ["smoke", TINY], 2, "runs-unwritable")
    assert "No space left on device" in line


@pytest.fixture
def read_only(tmp_path: Path, earlier: Path, trained: Path) -> Iterator[Project]:
    """A project whose runs folder (an earlier smoke, a finished training run) is a read-only bind mount."""
    project = Project(tmp_path / "project", tmp_path / "project" / "runs", earlier)
    copy_trained(project, trained)
    shutil.copytree(project.runs, tmp_path / "source")
    bound = mount("--bind", str(tmp_path / "source"), str(project.runs))
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here ({bound.stderr.strip() or 'not root'}); CI runs these as root")
    try:
        ro = mount("-o", "remount,ro,bind", str(project.runs))
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only here ({ro.stderr.strip()})")
        yield project
    finally:
        subprocess.run(["umount", "-l", str(project.runs)], capture_output=True)


def test_a_read_only_runs_folder_is_one_line_and_listing_still_works(read_only, trained):
    line = hostile(read_only, ["smoke", TINY], 2, "runs-unwritable")
    assert "Read-only file system" in line
    before = fingerprint(read_only.runs)
    for command in ("merge", "evaluate"):  # writers of an existing run: its lock cannot even be opened
        assert "Read-only file system" in hostile(read_only, [command, trained.name], 2, "run-unwritable")
    listing = read_only.cli("runs")
    assert listing.returncode == 0 and read_only.earlier.name in listing.stdout and trained.name in listing.stdout
    assert fingerprint(read_only.runs) == before


# --- damaged files and leftovers ----------------------------------------------------------------------------

def copy_trained(project: Project, trained: Path, name: str | None = None) -> Path:
    return copy_run(trained, project.runs, name)


def test_a_damaged_manifest_is_skipped_where_runs_are_listed(project, trained):
    good = copy_trained(project, trained)
    (good / "merged").mkdir()  # merged already: merge --auto then stops after picking, axolotl not needed
    (good / "merge.json").write_text("{}")
    bad = project.runs / "29990101-000000-tiny_cpu-train"
    bad.mkdir()
    (bad / "manifest.json").write_text('{"run": "29990101-000000-tiny_cpu-train", "stage": "tr')
    before = project.snapshot()

    listing = project.cli("runs")
    assert listing.returncode == 0 and good.name in listing.stdout and "Traceback" not in listing.stderr
    assert f"warning: {bad / 'manifest.json'}: manifest-corrupt" in listing.stderr
    merged = project.cli("merge", "--auto")
    assert merged.returncode == 0 and "already merged" in merged.stderr, merged.stderr[-2000:]
    hostile(project, ["train", "--resume"], 2, "resume-none")
    hostile(project, ["merge", bad.name], 2, "manifest-corrupt")
    assert project.snapshot() == before


@pytest.mark.slow
def test_a_killed_evaluation_is_cleaned_up_and_a_damaged_adapter_is_one_line(project, trained):
    run = copy_trained(project, trained)
    proc = project.start("evaluate", str(run))
    # the temporary report folder: the evaluation is under way
    wait_until(lambda: list(run.glob(".eval-*")), what="the evaluation's temporary folder", proc=proc)
    proc.kill()
    proc.wait()
    assert list(run.glob(".eval-*"))
    assert "killed" in project.cli("runs", "--format", "json").stdout

    weights = run / "output" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # a copy cut short
    line = hostile(project, ["evaluate", str(run)], 2, "eval-not-ready")
    assert "cut short" in line and not list(run.glob(".eval-*"))  # the dead evaluation's folder is gone
    assert "cut short" in hostile(project, ["merge", str(run)], 2, "merge-not-ready")


class Hub:
    """A stand-in for the Hugging Face Hub (HF_ENDPOINT) that counts the connections it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def env(self) -> dict[str, str]:
        return {"HF_ENDPOINT": f"http://127.0.0.1:{self.sock.getsockname()[1]}", "HF_HUB_ETAG_TIMEOUT": "2",
                "HF_HUB_DOWNLOAD_TIMEOUT": "2"}

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.requests.append(conn.recv(4096).split(b"\r\n")[0])
            conn.close()


def without_offline() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                              "TRANSFORMERS_OFFLINE")}


@pytest.mark.slow
def test_merge_of_a_local_model_never_reaches_for_the_hub(project, trained):
    run = copy_trained(project, trained)
    hub = Hub()
    base = json.loads((run / "manifest.json").read_text())
    assert base["offline"] is True
    load = ("import sys; from pipeline.core import inference; import yaml; "
            "cfg = yaml.safe_load(open(sys.argv[1])); "
            "inference.load(cfg['base_model'], adapter=sys.argv[2])")
    # the control: loading the same local model and adapter with the hub left on does reach for it
    control = subprocess.run([sys.executable, "-c", load, str(run / "config.yaml"), str(run / "output")],
                             env={**without_offline(), **hub.env}, capture_output=True, text=True, timeout=600)
    assert control.returncode == 0, control.stderr[-2000:]
    assert hub.requests, "the control reached no hub: this test could not fail"
    hub.requests.clear()

    proc = subprocess.run([sys.executable, "-m", "pipeline", "merge", str(run)], cwd=project.root,
                          env={**without_offline(), **hub.env}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "merged" / "config.json").is_file()
    assert hub.requests == []
