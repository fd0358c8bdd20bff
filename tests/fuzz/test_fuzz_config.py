"""Fuzzing the config readers: the YAML file (its text and its structure), `--set` keys and values, and
the `pipeline:` section.

Three levels, cheapest first: YAML text read by `config.load` and the section's reader (many examples,
milliseconds each); `--set` items through `parse_overrides` and `apply_overrides`; and whole configs, the
shipped tiny one with settings replaced by strange values, through `pipeline check` in this process
(every rule, axolotl's validation, the data and the estimate: a fifth of a second each, so fewer).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

import fuzzkit
import pytest
import yaml
from fuzzkit import examples, text, yaml_values
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.core import config, section
from pipeline.core.errors import UserError

TINY = fuzzkit.ROOT / "configs" / "tiny_cpu.yaml"
ROWS = ('{"messages": [{"role": "user", "content": "Rewrite: the river ran high."}, '
        '{"role": "assistant", "content": "The river swelled."}]}\n')

# --- YAML text --------------------------------------------------------------------------------------------

#: pieces of YAML that change what a document means: anchors, aliases, tags, merge keys, complex keys
YAML_PIECES = ["&a ", "*a", "!!binary ", "!!set ", "!!omap ", "!!timestamp ", "!!float ", "!!int ", "!!str ",
               "!!python/object:os.system ", "<<: *a\n", "? [a, b]\n: 1\n", "? {a: 1}\n: 1\n", "--- \n", "...\n",
               "%YAML 1.1\n---\n", "\t", "  ", "- ", ": ", "{", "}", "[", "]", ",", "|\n  x\n", ">-\n  x\n", "#",
               '"\\ud800"', '"\\U00110000"', '"\\x01"', '"\\0"', "2024-13-01", "1" * 5000, ".nan", "-.inf", "0x",
               "0o9", "1_000", "12:30:00", "~", "null", "yes", "\x01", "\ufeff", "\u2028", "\r\n", "\n"]


@st.composite
def yaml_texts(draw: st.DrawFn) -> bytes:
    """A YAML file: a strange document dumped properly, then cut and spliced with pieces that change meaning."""
    base = fuzzkit.dump_yaml(draw(st.one_of(
        st.dictionaries(text(), yaml_values(), max_size=5), yaml_values(), st.builds(dict, st.just(_tiny())))))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(base)))
        base = base[:at] + draw(st.one_of(st.sampled_from(YAML_PIECES), text())) + base[at:]
    raw = fuzzkit.encode(base)
    if draw(st.integers(0, 9)) == 0:
        raw = raw[:draw(st.integers(0, len(raw)))] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xef\xbb\xbf"]))
    return raw


@functools.cache
def _tiny() -> dict[str, Any]:
    return yaml.safe_load(TINY.read_text())


def load_one(raw: bytes) -> None:
    """config.load, the section's reader and resolve (without building models) on one file."""
    with tempfile.TemporaryDirectory(prefix="fuzz-config-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(raw)
        loaded = fuzzkit.judge_reader(lambda: config.load(path))
        if isinstance(loaded, config.LoadedConfig):
            for f in fuzzkit.judge_reader(lambda: section.validate(loaded)):
                fuzzkit.one_line(f)
            fuzzkit.judge_reader(lambda: (section.bounds(loaded), section.smoke_steps(loaded)))
            fuzzkit.judge_reader(lambda: config.resolve(loaded, build_models=False))
        assert path.read_bytes() == raw


@examples(400)
@given(raw=yaml_texts())
@example(raw=b"a: 2024-13-01\n")  # found by this fuzzer: PyYAML's date constructor raised ValueError
@example(raw=b"seed: " + b"9" * 5000 + b"\n")  # an integer past Python's 4,300-digit limit
@example(raw=b'a: "\\U00110000"\n')  # an escape past Unicode: ValueError from PyYAML's scanner
@example(raw=b"!!timestamp base_model: x\n")  # a tag PyYAML's constructor fails on (AttributeError)
@example(raw=b"a: 1\nb: x\x01\n")  # a control character: PyYAML's two-line ReaderError became a two-line finding
@example(raw=b'base_model: "\\ud83d\\ude00"\n')  # YAML does not pair surrogate escapes: a lone surrogate
@example(raw=b"datasets:\n  - path: ~nosuchuser/rows.jsonl\n")  # Path.expanduser raised RuntimeError
@example(raw=b"datasets:\n  - path: '" + b"a" * 300 + b".jsonl'\n")  # Path.exists raised ENAMETOOLONG
@example(raw=b'datasets:\n  - path: "a\\0b.jsonl"\n')  # a NUL in a path: Path.exists raised ValueError
def test_yaml_text_is_a_config_or_one_line(raw):
    load_one(raw)


# --- --set ------------------------------------------------------------------------------------------------

SET_KEYS = ["learning_rate", "lora_r", "datasets.0.path", "datasets.0.type", "datasets.1.path", "datasets.99.x",
            "datasets.-1.path", "datasets.x", "base_model.x", "pipeline.bounds.final_loss", "pipeline.smoke.max_steps",
            "pipeline.evaluate.gates.val_loss_drop", "pipeline", "a.b.c", "..", ".", "a..b", " ", "", "=", "x=y",
            "test_datasets.0.roles", "sequence_len", "micro_batch_size", "chat_template"]
SET_VALUES = ["2e-4", "1e999", "nan", ".nan", "[1, 2]", "{a: 1}", "&a [*a]", "*a", "a: &a [*a]", "!!binary x", "'x'",
              '"x', "x\ud800", "\udcff", "[" * 2000, "2024-13-01", "9" * 5000, "", "~", "- x", "|", "-1", "0"]


@st.composite
def set_items(draw: st.DrawFn) -> list[str]:
    items = []
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.one_of(st.sampled_from(SET_KEYS), text()))
        value = draw(st.one_of(st.sampled_from(SET_VALUES), text(),
                               st.builds(fuzzkit.dump_yaml, yaml_values()).map(str.strip)))
        items.append(draw(st.sampled_from([f"{key}={value}", key, f"{key}=", f"={value}"])))
    return items


def apply_set(items: list[str]) -> None:
    overrides = fuzzkit.judge_reader(lambda: config.parse_overrides(items))
    if isinstance(overrides, UserError):
        return
    data = fuzzkit.judge_reader(lambda: config.apply_overrides(_tiny(), overrides, where="tiny_cpu.yaml"))
    if isinstance(data, dict):
        loaded = config.LoadedConfig(path=TINY, data=data, overrides=overrides)
        for f in fuzzkit.judge_reader(lambda: section.validate(loaded)):
            fuzzkit.one_line(f)


@examples(400)
@given(items=set_items())
@example(items=["a=x\udcff"])  # found by this fuzzer: a command line's byte that is not UTF-8 reached findings
@example(items=['x="\\U00110000"'])  # PyYAML's ValueError was not a YAMLError: a traceback
def test_set_items_apply_or_are_one_line(items):
    apply_set(items)


# --- whole configs through `pipeline check` ---------------------------------------------------------------

def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a config, lists included."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


#: settings that pipeline's own rules read (besides every key of the tiny config)
MORE_KEYS = ["sample_packing", "eval_sample_packing", "val_set_size", "max_steps", "warmup_steps", "evals_per_epoch",
             "eval_steps", "save_steps", "gradient_checkpointing", "load_in_4bit", "load_in_8bit", "special_tokens",
             "tokens", "lora_modules_to_save", "output_dir", "dataset_prepared_path", "plugins", "trust_remote_code",
             "base_model_config", "tokenizer_config", "revision_of_model", "rl", "fsdp", "deepspeed", "context_parallel_size",
             "bf16", "fp16", "flash_attention", "max_grad_norm", "lr_scheduler", "optimizer", "num_epochs", "resume_from_checkpoint"]


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    """The tiny config with one to three settings replaced by strange values, added or removed."""
    cfg = yaml.safe_load(TINY.read_text())
    paths = _paths(cfg)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.one_of(st.sampled_from(paths), st.sampled_from(MORE_KEYS).map(lambda k: (k,))))
        target = cfg
        for part in where[:-1]:
            if not isinstance(target, (dict, list)) or (isinstance(target, list) and part >= len(target)) or \
                    (isinstance(target, dict) and part not in target):
                target = None
                break
            target = target[part]
        if isinstance(target, dict) or (isinstance(target, list) and where[-1] < len(target)):
            if isinstance(target, dict) and draw(st.integers(0, 5)) == 0:
                target.pop(where[-1], None)
            else:
                target[where[-1]] = fuzzkit.utf8(draw(st.one_of(yaml_values(), text())))
    return cfg


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's project: the shipped data/ with two small row files in place of the real ones (the check
    reads data relative to the config), and a configs/ folder for the fuzzed config."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(fuzzkit.ROOT / "data", root / "data", ignore=shutil.ignore_patterns("processed"))
    (root / "data" / "processed").mkdir()
    (root / "data" / "processed" / "visions_training.jsonl").write_text(ROWS + ROWS.replace("river", "sea"))
    (root / "data" / "processed" / "validation.jsonl").write_text(ROWS.replace("river", "forest"))
    (root / "configs").mkdir()
    shutil.copy(TINY, root / "configs" / TINY.name)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        fuzzkit.warm_up(["check", str(root / "configs" / TINY.name)])
    return root


def check_one(root: Path, cfg: dict[str, Any], items: list[str], output: str, monkeypatch: Any) -> None:
    monkeypatch.chdir(root)
    path = root / "configs" / "fuzzed.yaml"
    path.write_text(fuzzkit.dump_yaml(cfg), encoding="utf-8")
    before = fuzzkit.fingerprint(root / "data", path)
    sets = [f"--set={item}" for item in items]
    _, out, _ = fuzzkit.cli(["check", str(path), "--format", output, *sets])
    fuzzkit.check_output(out, output)
    assert fuzzkit.fingerprint(root / "data", path) == before


#: --set items that apply: a key of the config and a value
SET_ITEMS = st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SET_KEYS[:12]),
                               st.one_of(st.sampled_from(SET_VALUES), st.builds(fuzzkit.dump_yaml, yaml_values())
                                         .map(str.strip))), max_size=2)


@examples(40)
@given(cfg=mutated_configs(), items=st.one_of(SET_ITEMS, SET_ITEMS, set_items()), output=st.sampled_from(["table", "json"]))
def test_strange_settings_through_check_are_findings(cfg, items, output, project, monkeypatch):
    check_one(project, cfg, items, output, monkeypatch)


@pytest.mark.parametrize("setting", [
    {"lora_dropout": " "},  # found by this fuzzer: ValueError in the memory estimate of a rejected config
    {"lora_r": " "},  # ValueError counting trainable parameters
    {"base_model": "/dev/zero"},  # HFValidationError looking the tokenizer up
])
def test_found_settings_are_findings(setting, project, monkeypatch):
    check_one(project, {**_tiny(), **setting}, [], "table", monkeypatch)


def test_a_config_path_that_is_not_utf8_prints_as_one_line(tmp_path, monkeypatch):
    """A file name's undecodable byte reaches Python as a lone surrogate; print() to a UTF-8 stdout failed."""
    monkeypatch.chdir(tmp_path)
    _, out, _ = fuzzkit.cli(["check", "conf\udcff.yaml"])
    assert "conf\\udcff.yaml: config-missing" in out
