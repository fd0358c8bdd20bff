"""Fuzzing a model folder as the check reads it: config.json (the architecture: the estimate builds the model
from it on the meta device), the tokenizer's files (tokenizer_config.json, tokenizer.json, the chat
template) and the base_model reference itself.

Each example is a copy of pipeline://tiny-llama's folder with one to three of its files replaced (the
real file with fields set to strange values, any JSON, or bytes that are not JSON) or a strange
`base_model`, checked with `pipeline check` in this process. The property: exit 0, 1 or 2, one line per
problem, bounded time and memory.
"""

from __future__ import annotations

import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import fuzzkit
import pytest
from fuzzkit import dump_json, examples, json_documents, json_values, scalars, text
from hypothesis import example, given
from hypothesis import strategies as st

ROWS = ('{"messages": [{"role": "user", "content": "Rewrite: the river ran high."}, '
        '{"role": "assistant", "content": "The river swelled."}]}\n')
#: sizes a config.json may claim: the edges of what a shape can be, and far past any real model
SIZES = st.one_of(st.sampled_from([0, 1, 2, 3, -1, 7, 64, 2**31, 2**63, 10**6, 10**12]), scalars())
CONFIG_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model_type": st.one_of(st.sampled_from(["llama", "mistral", "qwen2", "gemma2", "gpt2", "bert", "t5", "llama4",
                                             "mixtral", "", "LLAMA"]), scalars()),
    "architectures": st.one_of(st.lists(st.sampled_from(["LlamaForCausalLM", "BertModel", "X"]), max_size=2),
                               json_values(max_leaves=3)),
    **dict.fromkeys(("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                     "intermediate_size", "vocab_size", "max_position_embeddings", "head_dim"), SIZES),
    "tie_word_embeddings": scalars(), "dtype": scalars(), "torch_dtype": scalars(),
    "rope_parameters": json_values(max_leaves=4), "rope_scaling": json_values(max_leaves=4),
    "auto_map": st.one_of(st.just({"AutoModelForCausalLM": "modeling_x.X"}), json_values(max_leaves=3)),
    "quantization_config": json_values(max_leaves=4), "num_local_experts": SIZES,
}
TOKENIZER_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "chat_template": st.one_of(st.sampled_from(["{{ messages[0]['content'] }}", "{% for m in messages %}",
                                                "{{ raise_exception('no') }}", "{{ messages | tojson }}"]), text()),
    "tokenizer_class": st.one_of(st.sampled_from(["LlamaTokenizer", "GPT2Tokenizer", "X", "TokenizersBackend"]),
                                 scalars()),
    "bos_token": scalars(), "eos_token": scalars(), "pad_token": scalars(), "model_max_length": SIZES,
    "added_tokens_decoder": json_values(max_leaves=4), "backend": scalars(),
}


@functools.cache
def tiny_folder() -> Path:
    from pipeline.core import models

    return models.resolve("pipeline://tiny-llama")


def fields_of(name: str, table: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """A JSON file of the tiny model with some fields set to strange values (or removed)."""
    @st.composite
    def edited(draw: st.DrawFn) -> bytes:
        data = json.loads((tiny_folder() / name).read_text())
        for key in draw(st.lists(st.sampled_from(sorted(table)), min_size=1, max_size=3, unique=True)):
            if draw(st.integers(0, 5)) == 0:
                data.pop(key, None)
            else:
                data[key] = draw(table[key])
        return fuzzkit.encode(dump_json(data, draw(st.booleans())))
    return edited()


def any_file() -> st.SearchStrategy[bytes]:
    return st.one_of(json_documents().map(fuzzkit.encode), st.binary(max_size=48),
                     st.sampled_from([b"", b"{", b"\xff\xfe", b"[" * 5000, b'{"a": NaN}']))


REPLACEMENTS = st.one_of(
    st.tuples(st.just("config.json"), st.one_of(fields_of("config.json", CONFIG_FIELDS),
                                                fields_of("config.json", CONFIG_FIELDS), any_file())),
    st.tuples(st.just("tokenizer_config.json"), st.one_of(fields_of("tokenizer_config.json", TOKENIZER_FIELDS),
                                                          any_file())),
    st.tuples(st.just("tokenizer.json"), any_file()),
    st.tuples(st.just("chat_template.jinja"), st.one_of(text(), st.sampled_from(["{% if %}", "{{ 1/0 }}"])).map(
        fuzzkit.encode)),
    st.tuples(st.sampled_from(["model.safetensors", "special_tokens_map.json", "generation_config.json"]),
              any_file()),
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    (root / "rows.jsonl").write_text(ROWS)
    tiny_folder()
    fuzzkit.warm_up(["check", str(write_config(root, str(tiny_folder()), root / "rows.jsonl"))])
    return root


def write_config(where: Path, base_model: Any, rows: Path, template: str = "tokenizer_default") -> Path:
    path = where / "config.yaml"
    cfg = {"base_model": base_model, "chat_template": template, "datasets": [{"path": str(rows),
           "type": "chat_template"}], "adapter": "lora", "lora_r": 8, "lora_target_linear": True,
           "micro_batch_size": 1, "num_epochs": 1, "learning_rate": 0.001, "sequence_len": 128}
    path.write_text(fuzzkit.dump_yaml(fuzzkit.utf8(cfg)))
    return path


# found by this fuzzer: UnicodeDecodeError, JSONDecodeError, TypeError from the architecture and model checks
@pytest.mark.parametrize("body", [b"\x80", b"{", b"0", b"[]"])
def test_a_config_json_that_is_no_json_object_is_one_line(body, project, monkeypatch, tmp_path):
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    shutil.copytree(tiny_folder(), folder)
    (folder / "config.json").write_bytes(body)
    code, out, _ = fuzzkit.cli(["check", str(write_config(tmp_path, str(folder), project / "rows.jsonl"))])
    assert code == 2 and "model-unavailable" in out and "is not a JSON object" in out


def test_a_model_of_no_parameters_is_a_warning(project, monkeypatch, tmp_path):
    """Found by this fuzzer: `hidden_size: 0` builds a model of 0 parameters (ZeroDivisionError in the facts)."""
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    shutil.copytree(tiny_folder(), folder)
    (folder / "config.json").write_text(json.dumps(json.loads((folder / "config.json").read_text()) |
                                                   {"hidden_size": 0}))
    code, out, _ = fuzzkit.cli(["check", str(write_config(tmp_path, str(folder), project / "rows.jsonl"))])
    assert "architecture-unknown" in out and "no parameters" in out


def test_a_tokenizer_that_fails_on_use_is_a_warning(project, monkeypatch, tmp_path):
    """Found by this fuzzer: a tokenizer_config.json with `model_max_length: ""` loads, then raises TypeError
    on the first rows it is given."""
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    shutil.copytree(tiny_folder(), folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text()) | {"model_max_length": ""}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    code, out, _ = fuzzkit.cli(["check", str(write_config(tmp_path, str(folder), project / "rows.jsonl"))])
    assert code == 0 and "tokenizer-unavailable" in out and "fails on the rows (TypeError)" in out


@examples(60)
@given(replaced=st.lists(REPLACEMENTS, min_size=1, max_size=3), output=st.sampled_from(["table", "json"]),
       template=st.sampled_from(["tokenizer_default", "llama3"]))
def test_a_strange_model_folder_is_findings(replaced, output, template, project, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))  # shapes of odd configs
    with tempfile.TemporaryDirectory(prefix="fuzz-model-") as tmp:
        folder = Path(tmp) / "model"
        shutil.copytree(tiny_folder(), folder)
        for name, body in replaced:
            (folder / name).write_bytes(body)
        before = fuzzkit.fingerprint(folder)
        config = write_config(Path(tmp), str(folder), project / "rows.jsonl", template)
        _, out, _ = fuzzkit.cli(["check", str(config), "--format", output])
        fuzzkit.check_output(out, output)
        assert fuzzkit.fingerprint(folder) == before


@examples(60)
@given(ref=st.one_of(text(), st.sampled_from(["meta-llama/Llama-3.1-8B", "a/b/c", "./x", "~", "~/x",
                                              "pipeline://random/llama-3.1-8b", "pipeline://random/" + "x" * 300,
                                              "/" + "a" * 300, "/dev/null", "/proc/self", "a\x00b"])),
       output=st.sampled_from(["table", "json"]))
@example(ref="~nosuchuser/model", output="table")  # Path.expanduser raised RuntimeError
@example(ref="/dev/zero", output="table")  # no hub id, so the tokenizer's cache lookup raised HFValidationError
@example(ref="/" + "a" * 300, output="table")  # a path longer than the file system allows (ENAMETOOLONG)
def test_a_strange_base_model_is_findings(ref, output, project, monkeypatch):
    _, out, _ = fuzzkit.cli(["check", str(write_config(project, ref, project / "rows.jsonl")), "--format", output])
    fuzzkit.check_output(out, output)
