"""What every fuzz test shares: the Hypothesis profiles, strategies for strange input, and the property.

Profiles (`PIPELINE_FUZZ`): `ci` (the default, part of `nox -s tests`) runs a fixed, derandomized set of
examples, a few hundred per reader and a few thousand in all; `fuzz` (`nox -s fuzz`) runs
`PIPELINE_FUZZ_EXAMPLES` (100,000) per property with a random seed and keeps every failing example in
Hypothesis' database under .cache/hypothesis, so a case found once is replayed first on the next run.

The property every reader is held to: the command exits 0, 1 or 2 (or returns); every problem is one
`path:line: rule: ...` line; nothing prints a traceback; time and memory stay bounded; the user's files are
byte for byte what they were.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import support
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from support import ROOT  # noqa: E402 - the one repository root

PROFILE = os.environ.get("PIPELINE_FUZZ", "ci")
FUZZ_EXAMPLES = int(os.environ.get("PIPELINE_FUZZ_EXAMPLES", "100000"))

_COMMON: dict[str, Any] = {
    "deadline": None,  # a shared 2-core CI machine stalls now and then; `bounded` below is the time limit
    "print_blob": True,
    # every example makes its own temporary folder: the function-scoped fixtures are only a base to copy
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                              HealthCheck.data_too_large, HealthCheck.large_base_example],
}
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
settings.register_profile("fuzz", max_examples=FUZZ_EXAMPLES,
                          database=DirectoryBasedExampleDatabase(str(ROOT / ".cache" / "hypothesis")), **_COMMON)
settings.load_profile(PROFILE)


def examples(ci: int) -> settings:
    """A property's settings: `ci` examples in the bounded run, the profile's count in a long one."""
    return settings(max_examples=ci if PROFILE == "ci" else FUZZ_EXAMPLES)


# --- strange values -----------------------------------------------------------------------------------------

#: strings that mean something to a reader: YAML's other types, Jinja, special tokens, paths, terminals
SPECIAL_TEXT = [
    "", " ", "\n", "\r\n", "\t", "\x00", "\ud800", "\udfff", "a\ud83dz", "\u2028", "\ufeff", "\x1b[2J", "\u202e",
    "null", "~", "yes", "no", "on", ".nan", ".inf", "-.inf", "1e-4", "2e-4", "0x1f", "0o17", "1_000", "12:30",
    "2024-01-01", "*a", "&a", "!!binary", "<<", "- x", "a: b", "[", "{", "'", '"', "#", "%",
    "{{ 1/0 }}", "{% if %}", "{{ raise_exception('x') }}", "<|eot_id|>", "<|begin_of_text|>", "<s>",
    "user", "assistant", "system", "human", "gpt", "tool", "from", "value", "messages", "content", "role",
    "../../etc/passwd", "/dev/zero", "/etc/passwd", "/", ".", "pipeline://", "pipeline://random/",
    "pipeline://tiny-llama", "pipeline://random/../../x", "~nosuchuser/x", "a" * 300 + ".jsonl", "a\x00b.jsonl", "meta-llama/Llama-3.1-8B", "C:\\x", "é", "🙂",
    "ß" * 3, "x" * 5000,
]


class Raw(str):
    """A JSON number written as it is: json.dumps cannot write 1e999, -0 or a 5,000-digit integer."""


RAW_NUMBERS = [Raw(s) for s in ("1e999", "-1e999", "1E-400", "-0", "0.1e1", "1" * 30, "-" + "9" * 25, "9" * 5000,
                                "1.0000000000000000000001", "5e-324")]


@functools.cache
def text() -> st.SearchStrategy[str]:
    """Strings a reader may meet: the special ones above, any Unicode (lone surrogates included), long runs.

    (Strategies are built once and shared: building one per draw costs more than the readers under test.)"""
    return st.one_of(
        st.sampled_from(SPECIAL_TEXT),
        st.text(max_size=24),
        st.text(st.characters(exclude_categories=()), max_size=12),  # with surrogates and control characters
        st.builds(lambda a, b: a + b, st.sampled_from(SPECIAL_TEXT), st.text(max_size=8)),
    )


@functools.cache
def scalars() -> st.SearchStrategy[Any]:
    """JSON scalars at their edges: huge and tiny numbers, numbers written raw, strange strings."""
    return st.one_of(
        st.none(), st.booleans(),
        st.integers(min_value=-3, max_value=5), st.integers(min_value=-2**70, max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(RAW_NUMBERS), text(),
    )


@functools.cache
def json_values(leaf: st.SearchStrategy[Any] | None = None, max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """Any JSON value, nested a few levels, with strange keys."""
    leaf = scalars() if leaf is None else leaf
    return st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(text(), inner, max_size=4)),
                        max_leaves=max_leaves)


def utf8(value: Any) -> Any:
    """`value` with every lone surrogate replaced: what a config holds once read (its readers refuse them)."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {utf8(k): utf8(v) for k, v in value.items()}
    if isinstance(value, list):
        return [utf8(v) for v in value]
    return value


def dump_json(value: Any, ascii_only: bool = True) -> str:
    """JSON text of `value`, with `Raw` numbers as they are (ascii_only=False writes lone surrogates raw)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=ascii_only)}: {dump_json(v, ascii_only)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dump_json(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def encode(text_: str) -> bytes:
    """Text as a file holds it; a lone surrogate written raw makes the file invalid UTF-8, as in the wild."""
    return text_.encode("utf-8", "surrogatepass")


def nesting(depth: int, kind: str = "[") -> str:
    """A JSON document nested `depth` deep (Python's json recurses once per level)."""
    if kind == "[":
        return "[" * depth + "]" * depth
    return '{"a": ' * depth + "1" + "}" * depth


@st.composite
def json_documents(draw: st.DrawFn, value: st.SearchStrategy[Any] | None = None) -> str:
    """A JSON text: a value (strange or shaped by `value`), sometimes nested far past Python's recursion limit."""
    if draw(st.integers(0, 9)) == 0:
        return nesting(draw(st.sampled_from([50, 999, 1001, 5000, 100_000])), draw(st.sampled_from("[{")))
    return dump_json(draw(value if value is not None else json_values()), draw(st.booleans()))


@functools.cache
def yaml_values(max_leaves: int = 6) -> st.SearchStrategy[Any]:
    """Values a YAML config can hold in place of a setting."""
    leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                     st.floats(), text(), st.sampled_from([0, 1, -1, 2**31, 10**30, 0.0, 1e-300, 1e300]))
    return st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(text(), inner, max_size=3)),
                        max_leaves=max_leaves)


def dump_yaml(data: Any) -> str:
    try:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:  # a lone surrogate: PyYAML escapes it only when not writing Unicode raw
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=False)


# --- the property -------------------------------------------------------------------------------------------

FINDING = re.compile(r"^(?:warning: )?(?P<where>.+?)(?::\d+)?: (?P<rule>[a-z][a-z0-9]*(?:-[a-z0-9]+)*): \S")
#: one example of any reader: far beyond what a real input takes, short of a hang
LIMIT_S = float(os.environ.get("PIPELINE_FUZZ_LIMIT_S", "120"))
#: growth of this process's peak memory during one example
LIMIT_MIB = 1024


def bounded(seconds: float = LIMIT_S, mib: int = LIMIT_MIB) -> contextlib.AbstractContextManager[None]:
    """support.bounded with the fuzz limits (PIPELINE_FUZZ_LIMIT_S)."""
    return support.bounded(seconds, mib)


def fingerprint(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (and what each other entry is), to compare before and after."""
    out: dict[str, str] = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for p in paths:
            if p.is_symlink() or not p.is_file():
                out[str(p)] = "link" if p.is_symlink() else ("dir" if p.is_dir() else "special")
            else:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_line(finding: object) -> str:
    """A finding as printed: one `path:line: rule: ...` line that a UTF-8 terminal can show."""
    line = str(finding)
    assert "\n" not in line and "\r" not in line, repr(line)
    assert FINDING.match(line), repr(line)
    line.encode("utf-8")  # a lone surrogate here would crash print() on a UTF-8 stdout
    return line


def cli(args: list[str], *, allowed: tuple[int, ...] = (0, 1, 2)) -> tuple[int, str, str]:
    """`pipeline ARGS` in this process (support.run_here, from the current folder), bounded; asserts the exit
    code, no traceback, printable output."""
    from support import run_here

    with bounded():
        done = run_here(*args, cwd=Path.cwd())
    code, stdout, stderr = done.returncode, done.stdout, done.stderr
    said = stdout + stderr
    assert "Traceback" not in said, said[-3000:]
    assert code in allowed, f"exit {code}: {said[-3000:]}"
    stdout.encode("utf-8")  # print() to a UTF-8 terminal is strict: what it cannot encode is a traceback there
    if code == 2 and not stdout.startswith("{"):  # `--format json` lists the findings in its document
        assert any(FINDING.match(line) for line in said.split("\n")), said[-3000:]
    return code, stdout, stderr


def warm_up(args: list[str]) -> None:
    """Run a command once, unbounded: the first import of axolotl and torch takes seconds and a gigabyte,
    which must not count against the first example."""
    from pipeline import cli as entry

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        entry.main(args)


def check_output(stdout: str, output: str) -> None:
    """`pipeline check`'s listing: every finding one line (table), or one JSON document (json)."""
    if output == "json":
        if not stdout:  # refused before any config was checked (a --set that is not key=value): stderr says
            return
        report = json.loads(stdout)  # one document (a message may hold a user's line break: it is data there)
        assert all(isinstance(f["message"], str) for c in report["configs"] for f in c["findings"])
        return
    lines = stdout.split("\n")
    if FINDING.match(lines[0]):  # the findings come first, then a blank line
        for line in lines[:lines.index("")]:
            assert FINDING.match(line), repr(line)


def judge_reader(fn: Callable[[], Any]) -> Any:
    """Call a reader bounded; a UserError is fine when every finding is one line, anything else fails."""
    from pipeline.core.errors import UserError

    with bounded():
        try:
            return fn()
        except UserError as exc:
            assert exc.findings
            for f in exc.findings:
                one_line(f)
            return exc


# --- a finished training run, as pipeline leaves it ----------------------------------------------------------

RUN = "20260101-000000-tiny_cpu-train"
ROW = {"messages": [{"role": "user", "content": "Rewrite: the river ran high."},
                    {"role": "assistant", "content": "The river swelled."}]}


def safetensors(header: Any, data: bytes = b"\0\0\0\0", length: int | None = None) -> bytes:
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return (len(head) if length is None else length).to_bytes(8, "little") + head + data


WEIGHTS = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}


def manifest(root: Path) -> dict[str, Any]:
    return {"run": RUN, "stage": "train", "status": "succeeded", "started": "2026-01-01T00:00:00+00:00",
            "finished": "2026-01-01T00:01:00+00:00", "command": ["pipeline", "train"],
            "config": {"path": str(root / "configs" / "tiny.yaml"), "sha256": "0" * 64, "resolved_sha256": "0" * 64},
            "data": {}, "versions": {"python": "3.11.7"}, "git": {"commit": None, "dirty": None},
            "hardware": {"accelerator": "cpu"}, "offline": True, "overrides": {}, "bounds": {},
            "world_size": 1, "attempts": [{"status": "succeeded", "exit_code": 0}], "exit_code": 0,
            "summary": {"steps": 2, "final_loss": 4.5, "peak_rss_gib": 1.0}, "last_checkpoint": "checkpoint-2",
            "adapter": str(root / "runs" / RUN / "output")}


METRICS = [{"kind": "start", "max_steps": 2, "trainable_params": 10, "total_params": 100, "world_size": 1},
           {"kind": "phase", "name": "configured", "t_s": 1.0},
           {"kind": "train", "step": 1, "loss": 5.0, "epoch": 0.5, "learning_rate": 0.01, "step_time_s": 0.1,
            "tokens_total": 100, "tokens_trainable": 50, "peak_rss_gib": 1.0},
           {"kind": "eval", "step": 2, "eval_loss": 4.8},
           {"kind": "train", "step": 2, "loss": 4.5, "epoch": 1.0, "step_time_s": 0.1, "tokens_total": 200},
           {"kind": "end", "step": 2, "peak_rss_gib": 1.0}, {"kind": "summary", "train_runtime": 1.0}]


def trained_run(root: Path, base_model: Path) -> Path:
    """A user's project with one finished training run (two steps, an adapter, a checkpoint) as pipeline
    leaves it, written directly: no axolotl run is needed to read it back."""
    (root / "configs").mkdir(parents=True)
    (root / "data").mkdir()
    rows = root / "data" / "rows.jsonl"
    rows.write_text(json.dumps(ROW) + "\n")
    for name in ("style_terms.txt", "general_heldout.txt"):
        shutil.copy(ROOT / "data" / name, root / "data" / name)
    source = (f"base_model: pipeline://tiny-llama\ndatasets:\n  - path: {rows}\n    type: chat_template\n"
              f"test_datasets:\n  - path: {rows}\n    type: chat_template\nadapter: lora\n"
              f"pipeline:\n  evaluate:\n    style_terms: {root / 'data' / 'style_terms.txt'}\n"
              f"    heldout: {root / 'data' / 'general_heldout.txt'}\n")
    (root / "configs" / "tiny.yaml").write_text(source)
    run = root / "runs" / RUN
    (run / "output" / "checkpoint-2").mkdir(parents=True)
    (run / "source.yaml").write_text(source)
    (run / "config.yaml").write_text(source.replace("pipeline://tiny-llama", str(base_model)).split("pipeline:")[0])
    (run / "manifest.json").write_text(json.dumps(manifest(root), indent=2))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in METRICS))
    for folder in (run / "output", run / "output" / "checkpoint-2"):
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                                                 "target_modules": ["q_proj"]}))
        (folder / "adapter_model.safetensors").write_bytes(safetensors(WEIGHTS))
    (run / "output" / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    return run
