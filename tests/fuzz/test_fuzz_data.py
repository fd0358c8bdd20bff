"""Fuzzing the dataset readers: every format the check reads, rows that are valid JSON with strange content.

`pipeline.checks.data` and `pipeline.checks.lengths` read a config's datasets: chat_template messages
(and the sharegpt layout through message_property_mappings), alpaca, completion and pre-tokenised rows.
The strategies build rows of the right shape with strange values where values go (numbers where text goes,
lone surrogates, huge numbers, nesting), rows of the wrong shape, strange dataset-entry settings, and
files with blank lines, byte-order marks, CRLF, lines that are not JSON and documents nested past Python's
recursion limit. The property: findings, one line each, and the file untouched.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import fuzzkit
import pytest
from fuzzkit import examples, json_documents, json_values, scalars, text
from hypothesis import given
from hypothesis import strategies as st

from pipeline.checks import data, lengths
from pipeline.core.config import LoadedConfig

ROLES = ("user", "assistant", "system", "human", "gpt", "tool", "from", "ipython", "User", "")


def sometimes(value: st.SearchStrategy[Any], strange: st.SearchStrategy[Any], odds: int = 4) -> st.SearchStrategy[Any]:
    """Mostly `value`, one time in `odds` something strange in its place."""
    return st.one_of(*[value] * (odds - 1), strange)


@functools.cache
def anything() -> st.SearchStrategy[Any]:
    return st.one_of(scalars(), json_values(max_leaves=4))


@functools.cache
def content() -> st.SearchStrategy[Any]:
    parts = st.lists(st.fixed_dictionaries({"type": sometimes(st.just("text"), text()), "text": sometimes(text(), anything())}),
                     max_size=2)
    return st.one_of(text(), text(), text(), anything(), parts)


def message(role_key: str, content_key: str, roles: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """A message: role and content (either may be missing or strange), sometimes an extra field."""
    shaped = st.fixed_dictionaries({}, optional={
        role_key: sometimes(st.sampled_from(roles), anything()), content_key: content(),
        "train": anything(), "weight": anything(), "tool_calls": anything()})
    required = st.fixed_dictionaries({role_key: sometimes(st.sampled_from(roles), anything(), 8), content_key: content()})
    return st.one_of(required, required, required, shaped, anything())


def chat_rows(field: str, role_key: str, content_key: str, roles: tuple[str, ...]) -> st.SearchStrategy[Any]:
    row = st.builds(lambda msgs, extra: {field: msgs, **extra},
                    sometimes(st.lists(message(role_key, content_key, roles), max_size=4), anything(), 6),
                    st.dictionaries(text(), anything(), max_size=2))
    return sometimes(row, anything(), 8)


def alpaca_rows() -> st.SearchStrategy[Any]:
    row = st.fixed_dictionaries({}, optional={"instruction": sometimes(text(), anything()),
                                              "input": sometimes(text(), anything()),
                                              "output": sometimes(text(), anything()),
                                              "system": text()})
    return sometimes(row, anything(), 8)


def completion_rows(field: str) -> st.SearchStrategy[Any]:
    row = st.fixed_dictionaries({}, optional={field: sometimes(text(), anything(), 3), "meta": anything()})
    return sometimes(row, anything(), 8)


def tokenised_rows() -> st.SearchStrategy[Any]:
    ids = st.lists(sometimes(st.integers(-1, 70000), anything(), 10), max_size=8)
    row = st.fixed_dictionaries({}, optional={"input_ids": ids, "attention_mask": ids, "labels": ids})
    return sometimes(row, anything(), 8)


@st.composite
def formats(draw: st.DrawFn) -> tuple[dict[str, Any], st.SearchStrategy[Any]]:
    """(dataset entry, rows) of one format, the entry's settings sometimes strange."""
    entry, rows = draw(st.sampled_from(FORMATS))
    entry = dict(entry)
    for key in draw(st.lists(st.sampled_from(ENTRY_KEYS), max_size=3, unique=True)):
        entry[key] = fuzzkit.utf8(draw(ENTRY_VALUES[key]))  # a config's strings are UTF-8 once read
    return entry, rows


#: every format the check reads: its dataset entry, and its rows
FORMATS: list[tuple[dict[str, Any], st.SearchStrategy[Any]]] = [
    ({"type": "chat_template", "field_messages": "messages"}, chat_rows("messages", "role", "content", ROLES)),
    ({"type": "chat_template", "field_messages": "conversations",  # sharegpt's layout
      "message_property_mappings": {"role": "from", "content": "value"},
      "roles": {"user": ["human"], "assistant": ["gpt"], "system": ["system"]}},
     chat_rows("conversations", "from", "value", ("human", "gpt", "system", "user", "tool"))),
    ({"type": "alpaca"}, alpaca_rows()),
    ({"type": "completion"}, completion_rows("text")),
    ({"type": "completion", "field": "body"}, completion_rows("body")),
    ({}, tokenised_rows()),  # pre-tokenised: no type, input_ids and labels
]


#: dataset-entry settings the readers consult, and values for them (anything at all besides)
ENTRY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "type": st.one_of(st.sampled_from(["chat_template", "alpaca", "completion", "sharegpt", "chat_template.default",
                                       "input_output", ""]), anything()),
    "field_messages": st.one_of(st.sampled_from(["messages", "conversations", ""]), anything()),
    "message_property_mappings": st.one_of(st.fixed_dictionaries({}, optional={"role": anything(), "content": anything()}),
                                           anything()),
    "message_field_role": anything(), "message_field_content": anything(),
    "roles": st.one_of(st.dictionaries(st.sampled_from(ROLES), st.one_of(st.lists(text(), max_size=2), anything()),
                                       max_size=3), anything()),
    "roles_to_train": st.one_of(st.lists(st.sampled_from(ROLES), max_size=2), st.sampled_from(ROLES), anything()),
    "message_field_training": anything(), "train_on_eos": anything(), "field": anything(), "ds_type": anything(),
    "chat_template": st.one_of(st.sampled_from(["llama3", "chatml", "tokenizer_default", "jinja", "gemma"]), anything()),
    "chat_template_jinja": st.one_of(st.sampled_from(["{{ messages[0]['content'] }}", "{% for m in messages %}",
                                                      "{{ raise_exception('no') }}", "{{ messages | tojson }}"]), text()),
    "split": anything(), "path": anything(),
}
ENTRY_KEYS = sorted(ENTRY_VALUES)
#: config settings the data readers consult
CONFIG_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "chat_template": ENTRY_VALUES["chat_template"], "chat_template_jinja": ENTRY_VALUES["chat_template_jinja"],
    "sequence_len": st.one_of(st.integers(-5, 10**12), anything()), "train_on_inputs": anything(),
    "excess_length_strategy": st.one_of(st.sampled_from(["drop", "truncate", "raise"]), anything()),
    "rl": anything(), "base_model": st.one_of(st.just("pipeline://tiny-llama"), anything()),
    "tokenizer_config": anything(),
}


#: lines a data file holds besides its rows: blank, not JSON, NaN, nested past the recursion limit
ODD_LINES = st.one_of(st.sampled_from(["", " ", "\t", "{", "}", "[1,", "NaN", "Infinity", "-Infinity", '{"a": NaN}',
                                       "null", "\x00", "\ufeff{}", "// c", "\x1b[2J"]),
                      json_documents(), text())


@functools.cache
def files(rows: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(suffix, bytes) of a data file: rows as JSON lines or a JSON array, with the strange lines files have."""
    return _files(st.lists(rows, max_size=5))


@st.composite
def _files(draw: st.DrawFn, rows: st.SearchStrategy[list[Any]]) -> tuple[str, bytes]:
    drawn = draw(rows)
    ascii_only = draw(st.booleans())
    suffix = draw(st.sampled_from([".jsonl", ".jsonl", ".jsonl", ".json", ".txt", "", ".csv", ".data"]))
    if suffix == ".json" and draw(st.booleans()):
        body = fuzzkit.dump_json(drawn, ascii_only)
    else:
        lines = [fuzzkit.dump_json(r, ascii_only) for r in drawn]
        for _ in range(draw(st.integers(0, 2))):
            lines.insert(draw(st.integers(0, len(lines))), draw(ODD_LINES))
        body = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines) + draw(st.sampled_from(["\n", ""]))
    if draw(st.integers(0, 9)) == 0:
        body = "\ufeff" + body
    return suffix, fuzzkit.encode(body)


@st.composite
def projects(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(config, {file name: bytes}): a training set and a test set in any of the formats."""
    cfg: dict[str, Any] = {"base_model": "pipeline://tiny-llama", "chat_template": "llama3", "sequence_len": 64}
    for key in draw(st.lists(st.sampled_from(sorted(CONFIG_VALUES)), max_size=2, unique=True)):
        cfg[key] = fuzzkit.utf8(draw(CONFIG_VALUES[key]))
    written: dict[str, bytes] = {}
    for key in ("datasets", "test_datasets"):
        entry, rows = draw(formats())
        suffix, body = draw(files(rows))
        name = f"{key}{suffix}"
        if key == "test_datasets" and draw(st.integers(0, 5)) == 0:
            name = next(iter(written))  # the same file for both: leakage everywhere
        else:
            written[name] = body
        entry.setdefault("path", name)
        cfg[key] = [entry]
    return cfg, written


def read(cfg: dict[str, Any], written: dict[str, bytes], tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """data.check on a project in a fresh folder: findings, one line each; the files untouched."""
    with tempfile.TemporaryDirectory(prefix="fuzz-data-") as tmp:
        folder = Path(tmp)
        for name, body in written.items():
            (folder / name).write_bytes(body)
        for key in ("datasets", "test_datasets"):
            for entry in cfg[key]:
                if isinstance(entry.get("path"), str) and entry["path"] in written:
                    entry["path"] = str(folder / entry["path"])
        before = fuzzkit.fingerprint(folder)
        monkeypatch.setattr(lengths, "tokenizer_for",
                            lambda _cfg: (tokenizer, "tiny") if tokenizer else (None, "not in this test"))
        loaded = LoadedConfig(path=folder / "config.yaml", data=cfg)
        with fuzzkit.bounded():
            sets, found = data.check(loaded, cfg)
            found += lengths.check(loaded, cfg, sets)  # as the check runs it, on the sets read
            for ds in sets:
                ds.stats()
        for f in found:
            print(fuzzkit.one_line(f))
        assert fuzzkit.fingerprint(folder) == before


@examples(500)
@given(project=projects(), measured=st.booleans())
def test_rows_of_every_format_are_findings_never_a_traceback(project, measured, tiny_tokenizer, monkeypatch):
    read(*project, tiny_tokenizer if measured else None, monkeypatch)


CHAT = {"type": "chat_template", "field_messages": "messages"}
ROW = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}'


@pytest.mark.parametrize("measured", [True, False])
@pytest.mark.parametrize("row, entry, rule", [
    # found by this fuzzer: a lone surrogate (valid JSON: "\ud800") reached the tokenizer (TypeError)
    ('{"messages": [{"role": "user", "content": "hi \\ud800"}, {"role": "assistant", "content": "x"}]}', CHAT,
     "data-json"),
    ('{"text": "\\udfff"}', {"type": "completion"}, "data-json"),
    # nesting past Python's recursion limit (RecursionError from json)
    ("[" * 100_000 + "]" * 100_000, CHAT, "data-json"),
    # an empty conversation: apply_chat_template raised ValueError
    ('{"messages": []}', CHAT, "data-row"),
    # a template that raises on a row: the TemplateError reached the command line
    (ROW, CHAT | {"chat_template": "jinja", "chat_template_jinja": "{{ raise_exception('no system turn') }}"},
     "data-row"),
    # entry settings of another type: AttributeError, TypeError
    (ROW, CHAT | {"message_property_mappings": True}, None),
    (ROW, CHAT | {"roles": {"user": "human", "assistant": 3}, "roles_to_train": 5, "field_messages": ["m"]}, None),
    # a user's line break inside a finding: two lines
    (ROW, CHAT | {"ds_type": "\n"}, "data-type-unchecked"),
])
def test_found_rows_stay_findings(row, entry, rule, measured, tiny_tokenizer, monkeypatch, capsys):
    cfg = {"base_model": "pipeline://tiny-llama", "chat_template": "llama3", "sequence_len": 64,
           "datasets": [{**entry, "path": "rows.jsonl"}], "test_datasets": []}
    read(cfg, {"rows.jsonl": row.encode() + b"\n"}, tiny_tokenizer if measured else None, monkeypatch)
    if rule is not None:
        assert rule in capsys.readouterr().out


