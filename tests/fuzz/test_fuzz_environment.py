"""Fuzzing what pipeline prints and where: hostile names (run folders, manifest fields) through `pipeline runs`,
to a terminal that works, speaks only ASCII or Latin-1, is full, closed or gone, from a working folder that
may have been deleted. The property: the documented exit code (0; 3 when standard output refused; 2 when the
working folder is gone), every line printable, one table row per run whatever the names hold, and every line
on standard error one `path: rule: ...` finding or a warning."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import fuzzkit
from fuzzkit import examples, text
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline import cli

STREAMS = ["utf-8", "ascii", "latin-1", "full", "pipe", "closed"]


class Refusing(io.TextIOBase):
    """A terminal that refuses every write: a full disk (/dev/full) or a reader that went away."""

    def __init__(self, err: int) -> None:
        self.err = err

    def write(self, s: str) -> int:
        raise OSError(self.err, os.strerror(self.err))


def stream(kind: str) -> Any:
    if kind == "full":
        return Refusing(errno.ENOSPC)
    if kind == "pipe":
        return Refusing(errno.EPIPE)
    if kind == "closed":
        return None
    return io.TextIOWrapper(io.BytesIO(), encoding=kind, newline="\n")


def folder_name(name: str) -> str | None:
    """`name` as part of a run folder's name, where the file system can hold it (no `/`, no NUL, 200 bytes)."""
    name = name.replace("/", "_").replace("\x00", "_")
    try:
        raw = os.fsencode(name)
    except UnicodeEncodeError:  # a surrogate no byte decodes to
        return None
    return name if raw and len(raw) <= 200 else None


@examples(200)
@given(names=st.lists(text(), min_size=1, max_size=3), fields=st.lists(text(), min_size=3, max_size=3),
       out=st.sampled_from(STREAMS), err=st.sampled_from(["utf-8", "ascii", "full"]), cwd_gone=st.booleans())
@example(names=["x\n| forged | row |", "\x1b[31m\u202e"], fields=["a\nb", "\r", "\x85"], out="utf-8", err="utf-8",
         cwd_gone=False)
def test_what_runs_prints_is_one_row_a_run_on_any_terminal(names, fields, out, err, cwd_gone):
    with tempfile.TemporaryDirectory(prefix="fuzz-env-") as tmp:
        runs = Path(tmp) / "runs"
        made = []
        for i, raw in enumerate(names):
            if (name := folder_name(raw)) is None:
                continue
            folder = runs / f"2026010{i}-000000-{name}-train"
            folder.mkdir(parents=True)
            manifest = {"run": folder.name, "stage": fields[0], "status": fields[1],
                        "config": {"path": f"/p/{fields[2]}.yaml"}, "summary": {"steps": 3}}
            (folder / "manifest.json").write_bytes(fuzzkit.encode(json.dumps(manifest, ensure_ascii=False)))
            made.append(folder)
        stdout, stderr = stream(out), stream(err)
        before = os.getcwd()
        gone = Path(tmp) / "gone"
        gone.mkdir()
        if cwd_gone:
            os.chdir(gone)
            gone.rmdir()
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), fuzzkit.bounded():
                code = cli.main(["runs", "--runs-dir", str(runs)])
        finally:
            os.chdir(before)
        readable = [f for f in made if manifest_reads(f)]  # a manifest that is not JSON is skipped, warned
        if cwd_gone:
            assert code == 2
        elif out in ("full", "pipe", "closed") or (err == "full" and len(readable) < len(made)):
            assert code == 3  # the stream that refused is said on the other, if it works
        else:
            assert code == 0
        if out in STREAMS[:3] and not cwd_gone:
            lines = [line for line in read(stdout).rstrip("\n").split("\n") if ": output-unwritable: " not in line]
            assert all(safe(line) for line in lines), lines
            if readable:
                assert len(lines) == 2 + len(readable), lines  # header, rule, one row a run
        if err != "full":
            for line in read(stderr).splitlines():
                assert safe(line) and (fuzzkit.FINDING.match(line) or line.startswith("warning:")), line


def manifest_reads(folder: Path) -> bool:
    from pipeline.core import runs

    try:
        runs.read_manifest(folder / "manifest.json")
    except runs.CorruptManifest:
        return False
    return True


def safe(line: str) -> bool:
    """Nothing a terminal would act on or hide: no control, format (but the two joiners), separator, surrogate
    or private-use character."""
    return not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co") and c not in "\u200c\u200d"
                   for c in line)


def read(s: Any) -> str:
    s.flush()
    return s.buffer.getvalue().decode(s.encoding)
