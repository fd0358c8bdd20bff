"""Bounded reading (pipeline.core.safeio): what is refused, and that nothing it refuses is ever opened."""

from __future__ import annotations

import os
import threading

import pytest
import torch
import yaml
from safetensors.torch import save_file

from pipeline.core import safeio
from pipeline.core.errors import UserError
from pipeline.core.safeio import structured

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))


def test_an_alias_bomb_is_refused_before_anything_walks_it():
    assert len(BOMB) < 400  # 9^9 = 387,420,489 values once expanded
    with pytest.raises(safeio.BadFile) as exc:
        safeio.load_yaml(BOMB)
    assert exc.value.rule == "yaml-aliases" and "200,000" in exc.value.message


def test_aliases_that_expand_modestly_are_fine_and_shared_values_count_each_time():
    text = "targets: &t [q_proj, v_proj]\na: *t\nb: *t\n"
    node, data = safeio.load_yaml(text)
    assert data == {"targets": ["q_proj", "v_proj"], "a": ["q_proj", "v_proj"], "b": ["q_proj", "v_proj"]}
    assert structured._expanded_size(node, 10**6) == 1 + 3 + 3 * 3  # the mapping, its 3 keys, 3 lists of 2
    with pytest.raises(safeio.BadFile):
        safeio.load_yaml(text, max_nodes=10)


@pytest.mark.parametrize("text, rule", [
    ("a: &a [*a]\n", "yaml-aliases"),                 # an alias inside its own value: a cycle
    ("[" * 3000 + "]" * 3000, "yaml-too-deep"),
])
def test_cycles_and_runaway_nesting_are_one_finding(text, rule):
    with pytest.raises(safeio.BadFile) as exc:
        safeio.load_yaml(text)
    assert exc.value.rule == rule


def test_unsafe_tags_stay_refused():
    with pytest.raises(yaml.YAMLError):
        safeio.load_yaml("a: !!python/object/apply:os.system ['true']\n")


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "rows.jsonl"
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer() -> None:  # if anything opened the FIFO for reading, this open would return
        fd = os.open(fifo, os.O_WRONLY)
        opened.set()
        os.close(fd)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    for read in (lambda: safeio.sha256(fifo), lambda: safeio.read_text(fifo, "data", 100),
                 lambda: list(safeio.lines(fifo, "data", max_bytes=100, max_line=10))):
        with pytest.raises(safeio.BadFile) as exc:
            read()
        assert exc.value.rule == "data-not-file" and "named pipe" in exc.value.message
    assert not opened.wait(0.2)
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # release the writer thread


def test_a_symlink_to_a_device_names_its_target(tmp_path):
    link = tmp_path / "rows.jsonl"
    link.symlink_to("/dev/zero")
    with pytest.raises(safeio.BadFile) as exc:
        safeio.sha256(link)
    assert exc.value.rule == "data-not-file"
    assert "links to /dev/zero, a character device" in exc.value.message


def test_directories_and_oversized_files(tmp_path):
    with pytest.raises(safeio.BadFile) as exc:
        safeio.read_text(tmp_path, "config", 100)
    assert exc.value.rule == "config-not-file" and "directory" in exc.value.message
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n" * 100)
    with pytest.raises(safeio.BadFile) as exc:
        safeio.read_text(big, "config", 499)
    assert exc.value.rule == "config-too-large"
    assert safeio.read_text(big, "config", 500).count("\n") == 100


def test_text_must_be_utf8_and_the_bad_line_is_named(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": "caf\xe9"}\n')
    with pytest.raises(safeio.BadFile) as exc:
        list(safeio.lines(p, "data", max_bytes=10**6, max_line=10**6))
    assert (exc.value.rule, exc.value.line) == ("data-encoding", 2) and "0xe9" in exc.value.message
    with pytest.raises(safeio.BadFile) as exc:
        safeio.read_text(p, "config", 10**6)
    assert (exc.value.rule, exc.value.line) == ("config-encoding", 2)
    p.write_bytes(b"\xef\xbb\xbfa: 1\n")  # a byte-order mark is UTF-8 and is dropped
    assert safeio.read_text(p, "config", 100) == "a: 1\n"
    p.write_bytes(b"a: 1\n\x00\x01\x02")
    with pytest.raises(safeio.BadFile) as exc:
        safeio.read_text(p, "config", 100)
    assert "binary" in exc.value.message


def test_a_line_past_the_cap_is_refused_without_holding_it(tmp_path):
    p = tmp_path / "rows.jsonl"
    p.write_bytes(b'{"a": 1}\n' + b"x" * 5000 + b"\n")
    seen = []
    with pytest.raises(safeio.BadFile) as exc:
        for n, _ in safeio.lines(p, "data", max_bytes=10**6, max_line=1000):
            seen.append(n)
    assert seen == [1] and (exc.value.rule, exc.value.line) == ("data-line-too-long", 2)


def test_limits_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(safeio.LINE_BYTES_ENV, "123")
    assert safeio.line_bytes() == 123
    monkeypatch.setenv(safeio.LINE_BYTES_ENV, "lots")
    with pytest.raises(UserError) as exc:
        safeio.line_bytes()
    assert exc.value.findings[0].rule == "env-value"


def test_json_refuses_nan_and_infinity():
    assert safeio.json_loads('{"a": 1.5}') == {"a": 1.5}
    for bad in ('{"a": NaN}', '[Infinity]', '[-Infinity]'):
        with pytest.raises(ValueError, match="is not JSON"):
            safeio.json_loads(bad)


def test_nan_is_found_anywhere_in_a_config():
    found = dict(safeio.find_nan({"weight_decay": float("nan"), "datasets": [{"x": 1.0}, {"y": float("nan")}]}))
    assert set(found) == {("weight_decay",), ("datasets", 1, "y")}


def test_a_safetensors_file_cut_short_is_told_apart_from_a_whole_one(tmp_path):
    p = tmp_path / "adapter_model.safetensors"
    save_file({"w": torch.ones(64)}, str(p))
    assert safeio.safetensors_problem(p) is None
    whole = p.read_bytes()
    p.write_bytes(whole[:-10])
    assert "cut short" in (safeio.safetensors_problem(p) or "")
    p.write_bytes(whole[:5])
    assert "too short" in (safeio.safetensors_problem(p) or "")
    p.write_bytes(b"\xff" * 64)
    assert safeio.safetensors_problem(p) is not None
