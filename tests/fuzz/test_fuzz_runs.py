"""Fuzzing what pipeline reads back from a run folder: the manifest, metrics.jsonl, a checkpoint's
trainer_state.json, the adapter folder (adapter_config.json and the safetensors header), the lock file and
the run's own config.yaml.

Pipeline wrote these itself, but a disk that filled, a copy cut short or a hand edit leaves anything in
them, and every command that lists or picks runs reads them: `pipeline runs`, `merge`, `evaluate` and
`train --resume`, with and without a RUN. Each is run in this process on a finished training run with one
of its files replaced; the work after the reading (axolotl, loading models) is replaced by a stand-in that
stops the command, so an example takes milliseconds. The property: exit 0, 1 or 2 with one line per
problem, or the command got as far as that work.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fuzzkit
import pytest
from fuzzkit import dump_json, examples, json_documents, json_values, scalars, text
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core import safeio

RUN = fuzzkit.RUN
WEIGHTS = fuzzkit.WEIGHTS
METRICS = fuzzkit.METRICS
manifest, safetensors = fuzzkit.manifest, fuzzkit.safetensors


class Reached(Exception):
    """The command read everything and got as far as the work that follows (axolotl, a model load)."""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.core import models

    root = tmp_path_factory.mktemp("project")
    fuzzkit.trained_run(root, models.resolve("pipeline://tiny-llama"))
    return root


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The work after the reading, replaced: axolotl (merge), the model loads (evaluate), an attempt (train)."""
    from pipeline.core import engine
    from pipeline.stages import evaluate, train

    def reached(*args: Any, **kwargs: Any) -> Any:
        raise Reached()

    monkeypatch.setattr(engine, "run", reached)
    monkeypatch.setattr(evaluate, "measure_all", reached)
    monkeypatch.setattr(train, "attempt", reached)


# --- what replaces a file -----------------------------------------------------------------------------------

def shaped(base: dict[str, Any]) -> st.SearchStrategy[Any]:
    """`base` with some fields replaced by strange values, removed or added."""
    def change(edits: list[tuple[str, int, Any]]) -> dict[str, Any]:
        out = dict(base)
        for key, how, value in edits:
            if how == 0:
                out.pop(key, None)
            else:
                out[key] = value
        return out

    keys = st.one_of(st.sampled_from(sorted(base)), text())
    return st.lists(st.tuples(keys, st.integers(0, 3), st.one_of(scalars(), json_values(max_leaves=4))),
                    min_size=1, max_size=3).map(change)


def contents(base: Any) -> st.SearchStrategy[bytes]:
    """A file pipeline wrote: its JSON with strange fields, any JSON, or bytes that are not JSON at all."""
    shaped_text = (shaped(base) if isinstance(base, dict) else st.just(base)).map(
        lambda v: fuzzkit.encode(dump_json(v, False)))
    return st.one_of(shaped_text, shaped_text, json_documents().map(fuzzkit.encode),
                     st.binary(max_size=64), st.sampled_from([b"", b"{", b'{"run": "x", "stage": "tr', b"\xff\xfe",
                                                              b"[" * 5000, b"NaN", b'{"a": Infinity}']))


@functools.cache
def record_lines() -> st.SearchStrategy[bytes]:
    """metrics.jsonl: the recorder's records with strange fields, any lines, a last line cut short."""
    line = st.one_of(*[shaped(r).map(lambda v: dump_json(v)) for r in METRICS[:5]], json_documents(), text())
    return st.lists(line, max_size=6).map(lambda lines: fuzzkit.encode("\n".join(lines) + "\n"))


@functools.cache
def headers() -> st.SearchStrategy[bytes]:
    """adapter_model.safetensors: a header of strange tensors, a length that lies, a file cut short."""
    tensor = st.fixed_dictionaries({}, optional={"dtype": st.one_of(st.just("F32"), scalars()),
                                                 "shape": st.one_of(st.just([1]), json_values(max_leaves=3)),
                                                 "data_offsets": st.one_of(st.just([0, 4]), st.lists(scalars(), max_size=3),
                                                                           json_values(max_leaves=3))})
    header = st.one_of(st.dictionaries(st.one_of(st.just("w"), st.just("__metadata__"), text()),
                                       st.one_of(tensor, json_values(max_leaves=3)), max_size=3), json_values())
    return st.one_of(
        st.builds(lambda h, data: safetensors(h, data), header, st.binary(max_size=16)),
        st.builds(lambda n, data: safetensors(WEIGHTS, data, n), st.integers(0, 2**64 - 1), st.binary(max_size=16)),
        st.builds(lambda h: safetensors(fuzzkit.encode(h)), json_documents()),
        st.binary(max_size=24))


@functools.cache
def replacements() -> st.SearchStrategy[tuple[str, bytes]]:
    """(file of the run, its new bytes)."""
    return st.one_of(
        st.tuples(st.just("manifest.json"), contents(manifest(Path("/p")))),
        st.tuples(st.just("metrics.jsonl"), record_lines()),
        st.tuples(st.just("output/checkpoint-2/trainer_state.json"), contents({"global_step": 2, "epoch": 1.0})),
        st.tuples(st.just("output/adapter_config.json"), contents({"peft_type": "LORA", "r": 8})),
        st.tuples(st.just("output/adapter_model.safetensors"), headers()),
        st.tuples(st.just("output/checkpoint-2/adapter_model.safetensors"), headers()),
        st.tuples(st.just(".lock"), st.one_of(contents({"pid": 1, "host": "h", "command": "c"}),
                                              st.just(b"[" * 3000))),
        st.tuples(st.sampled_from(["config.yaml", "source.yaml"]), st.one_of(
            st.binary(max_size=40), st.sampled_from([b"a: 2024-13-01\n", b"base_model: [1]\n", b"- 1\n", b"\x01",
                                                     b"a: &a [*a]\n", b"base_model: x\ntest_datasets: 5\n"]))),
    )


COMMANDS = [["runs", "--format", "table"], ["runs", "--format", "json"], ["merge", RUN], ["merge", "--auto"],
            ["evaluate", RUN], ["evaluate"], ["train", "--resume", RUN], ["train", "--resume"]]


def read_back(template: Path, name: str, body: bytes | Callable[[Path], None], command: list[str],
              monkeypatch: pytest.MonkeyPatch, unfinished: bool = False) -> bool:
    """`command` on a copy of the template with `name` replaced by `body`; True when it reached the work.

    unfinished: the run stopped before its last step (its metrics end before the recorder's `end` record),
    as a run `train --resume` continues must have."""
    with tempfile.TemporaryDirectory(prefix="fuzz-run-") as tmp:
        root = Path(tmp) / "project"
        shutil.copytree(template, root, symlinks=True)
        run = root / "runs" / RUN
        for file in ("manifest.json", "source.yaml", "config.yaml"):  # the project moved: so did its paths
            (run / file).write_text((run / file).read_text().replace(str(template), str(root)))
        if unfinished:
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS
                                                       if r["kind"] not in ("end", "summary")))
        if callable(body):  # a file of another type, or cut short
            body(run / name)
        else:
            (run / name).write_bytes(body.replace(str(template).encode(), str(root).encode()))
        # fuzzkit's placeholder stands for the sha256 pipeline wrote of the run's config.yaml, as it is now
        if not (run / "manifest.json").is_symlink() and (run / "manifest.json").is_file() \
                and (run / "config.yaml").is_file() and not (run / "config.yaml").is_symlink():
            real = hashlib.sha256((run / "config.yaml").read_bytes()).hexdigest().encode()
            (run / "manifest.json").write_bytes((run / "manifest.json").read_bytes().replace(b"0" * 64, real))
        before = fuzzkit.fingerprint(root / "configs", root / "data")
        monkeypatch.chdir(root)
        try:
            fuzzkit.cli([*command, "--runs-dir", str(root / "runs")])
            reached = False
        except Reached:
            reached = True
        assert fuzzkit.fingerprint(root / "configs", root / "data") == before
        return reached


@examples(300)
@given(replaced=replacements(), command=st.sampled_from(COMMANDS))
def test_damaged_run_files_are_one_line(replaced, command, template, stand_ins, monkeypatch):
    read_back(template, *replaced, command, monkeypatch)


@pytest.mark.parametrize("command", COMMANDS[2:], ids=" ".join)
def test_an_untouched_run_reaches_the_work(command, template, stand_ins, monkeypatch):
    """The control: with nothing damaged, every command gets past its reading (so the property can fail)."""
    body = (template / "runs" / RUN / "manifest.json").read_bytes()
    if command[0] == "train":  # only an unfinished run can be resumed
        body = body.replace(b'"status": "succeeded"', b'"status": "failed"', 1)
    assert read_back(template, "manifest.json", body, command, monkeypatch, unfinished=command[0] == "train")


#: every file a command reads back from a run folder
RUN_FILES = ["manifest.json", "metrics.jsonl", "config.yaml", "source.yaml", ".lock", "output/adapter_config.json",
             "output/adapter_model.safetensors", "output/checkpoint-2/trainer_state.json",
             "output/checkpoint-2/adapter_model.safetensors"]


def kind_of_file(kind: str, cut: int) -> Callable[[Path], None]:
    """What replaces a file: a FIFO, a directory, a symlink to /dev/zero or to the project's config, the file
    cut short at `cut` bytes, or removed. (A `.lock` linked to a file outside the run was truncated through
    the link before lock.py opened it with O_NOFOLLOW: found by this property.)"""
    def place(path: Path) -> None:
        if not os.path.lexists(path):  # the lock file exists once a command has run
            path.write_bytes(b"")
        if kind == "cut":
            os.truncate(path, min(cut, path.stat().st_size))
            return
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        elif kind == "zero":
            path.symlink_to("/dev/zero")
        elif kind == "link":  # to the user's config: the property's fingerprint sees a write through the link
            path.symlink_to(next(p for p in path.parents if p.name == "project") / "configs" / "tiny.yaml")
    return place


@examples(200)
@given(name=st.sampled_from(RUN_FILES), kind=st.sampled_from(["fifo", "dir", "zero", "link", "cut", "gone"]),
       cut=st.integers(0, 4096), command=st.sampled_from(COMMANDS))
def test_a_run_file_of_another_type_is_one_line(name, kind, cut, command, template, stand_ins, monkeypatch):
    """The file types a disk, a copy or a person leaves where pipeline wrote a regular file: never a hang (the
    property's time bound interrupts a blocked open), never /dev/zero read without end (its memory bound)."""
    read_back(template, name, kind_of_file(kind, cut), command, monkeypatch)


@pytest.mark.parametrize("name, kind, command", [
    (".lock", "fifo", ["runs", "--format", "table"]),  # found by this fuzzer: `runs` blocked opening the lock
    (".lock", "dir", ["merge", RUN]),  # refused as "cannot create", not what it is
    ("metrics.jsonl", "zero", ["evaluate", RUN]),  # runfolder-probes.md: 6.6 GB, then MemoryError
    ("output/checkpoint-2/trainer_state.json", "fifo", ["train", "--resume", RUN]),
])
def test_found_run_file_types_are_one_line(name, kind, command, template, stand_ins, monkeypatch):
    read_back(template, name, kind_of_file(kind, 0), command, monkeypatch, unfinished=command[0] == "train")


@examples(300)
@given(body=headers())
def test_any_safetensors_file_is_whole_or_says_why(body):
    """The adapter's and a checkpoint's weights, read directly (the commands above reach this reader only
    through an intact manifest, one example in dozens)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-weights-") as tmp:
        path = Path(tmp) / "adapter_model.safetensors"
        path.write_bytes(body)
        problem = fuzzkit.judge_reader(lambda: safeio.safetensors_problem(path))
        assert problem is None or isinstance(problem, str) and "\n" not in problem


def read_metrics(body: bytes, step: int) -> None:
    """metrics.jsonl, read by everything that reads it: the summary, the end-of-run judgement, train's
    progress lines, `pipeline runs` for a run killed before it recorded, and the rewind of --resume."""
    import io

    from pipeline.core import runs, summary
    from pipeline.stages import runs as runs_cmd
    from pipeline.stages import train

    with tempfile.TemporaryDirectory(prefix="fuzz-metrics-") as tmp:
        run = runs.Run(Path(tmp))
        run.metrics_path.write_bytes(body)
        runs.write_json(run.manifest_path, {"run": "r", "stage": "train", "status": "running"})

        def read() -> None:
            records = runs.read_jsonl(run.metrics_path)
            summary.summarize(records)
            train.finished_at(records)
            train.summarize(run)
            progress = train.Progress(run.metrics_path, io.StringIO())
            progress.offset = 0
            progress.poll()
            runs_cmd.table([runs_cmd.describe(run)])
            train.rewind_metrics(run, step)

        fuzzkit.judge_reader(read)


@examples(300)
@given(body=record_lines(), step=st.integers(0, 3))
def test_any_metrics_file_is_summarised_or_skipped(body, step):
    read_metrics(body, step)


@pytest.mark.parametrize("body", [
    b"[" * 50 + b"]" * 50 + b"\n",  # found by this fuzzer: a list where a record goes (AttributeError)
    b"[" * 5000 + b"\n",  # nested past the recursion limit
    b'{"kind": "train", "epoch": 1.0}\n',  # a train record without its step (KeyError)
    b"\xed\xa0\x80\n",  # not UTF-8: UnicodeDecodeError, in train's progress thread too
    b'{"kind": "train", "step": 2, "epoch": 1e999, "loss": 1.0}\n',  # an epoch past any float (OverflowError)
])
def test_found_metrics_lines_are_skipped(body):
    read_metrics(body, 1)


@pytest.mark.parametrize("name, body, command", [
    # found by this fuzzer: the lock file nested past the recursion limit (RecursionError)
    (".lock", b"[" * 3000, ["merge", RUN]),
    # the run's config.yaml with a date PyYAML cannot build (ValueError)
    ("config.yaml", b"0000-00-00", ["merge", RUN]),
    # a run config naming no list of validation rows (TypeError)
    ("config.yaml", b"base_model: ;\ntest_datasets: 1", ["evaluate", RUN]),
])
def test_found_run_files_are_one_line(name, body, command, template, stand_ins, monkeypatch):
    read_back(template, name, body, command, monkeypatch)


@pytest.mark.parametrize("field, command", [
    ({"config": None}, ["evaluate", RUN]),  # found by this fuzzer: AttributeError on None.get
    ({"summary": [], "overrides": "x", "data": [1]}, ["evaluate", RUN]),
    ({"status": "failed", "data": "x", "world_size": "x", "summary": []}, ["train", "--resume", RUN]),
])
def test_a_manifest_field_of_another_type_reads_as_absent(field, command, template, stand_ins, monkeypatch):
    body = json.dumps(manifest(template) | field).encode()
    assert read_back(template, "manifest.json", body, command, monkeypatch,  # it got past the reading
                     unfinished=command[0] == "train")


@pytest.mark.parametrize("header", [
    {"w": {"dtype": "F32", "shape": [1], "data_offsets": []}},  # found by this fuzzer: IndexError
    {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, "x"]}},  # ValueError from int()
    {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, [4]]}},  # TypeError from int()
])
def test_found_safetensors_headers_are_one_line(header, tmp_path):
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(safetensors(header))
    assert isinstance(safeio.safetensors_problem(path), str)



def test_a_run_folder_named_with_a_byte_that_is_not_utf8_is_listed(template, tmp_path, monkeypatch):
    """A folder name's undecodable byte reaches Python as a lone surrogate; print() to a UTF-8 stdout failed."""
    runs_dir = tmp_path / "runs"
    shutil.copytree(template / "runs" / RUN, runs_dir / f"{RUN}\udcff")
    _, out, _ = fuzzkit.cli(["runs", "--runs-dir", str(runs_dir)])
    assert f"{RUN}\\udcff" in out
