"""Names from outside never become structure in a file pipeline generates.

A config's file name, a path, a `--set` value or a model name may hold line breaks, quotes, YAML indicators and
control characters. `config.generated_yaml` writes the run's config.yaml; the property says that whatever the
comment lines and values hold, the text parses back to exactly the values meant, with one comment line per
comment and no other key.
"""

from __future__ import annotations

import yaml
from fuzzkit import examples, text
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.core import config

#: what turns a comment or a plain scalar into structure, if written raw
HOSTILE = st.sampled_from(["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1b[31m", "\x00",
                           "#", ": ", "- ", "? ", "&a", "*a", "!!python/object:os.system", "'", '"', "|", ">",
                           "{", "[", "%", "@", "`", "\ud800", "\udcff", "\ufeff", "trust_remote_code: true"])
NAMES = st.lists(st.one_of(HOSTILE, text()), max_size=6).map("".join)


@examples(ci=400)
@given(comments=st.lists(NAMES, max_size=3),
       values=st.dictionaries(NAMES, st.one_of(NAMES, st.lists(NAMES, max_size=3), st.booleans(), st.integers()),
                              max_size=4))
@example(comments=["x\ntrust_remote_code: true\n#.yaml"], values={"base_model": "m"})
@example(comments=["x\x85trust_remote_code: true"], values={"base_model": "m"})
@example(comments=["x\u2028trust_remote_code: true"], values={"output_dir": "a\nb: c"})
def test_a_generated_yaml_reads_back_as_meant(comments: list[str], values: dict[str, object]) -> None:
    text_ = config.generated_yaml(comments, values)
    assert yaml.safe_load(text_) == values
    head = text_.splitlines(keepends=True)[:len(comments)]
    assert all(line.startswith("# ") and line.endswith("\n") and line.count("\n") == 1 for line in head)
    # the emitter's own text has no line break YAML reads that Python's splitlines would not (NEL, LS, PS)
    assert len(text_.splitlines()) == text_.count("\n")


def test_a_mismatch_names_the_first_key() -> None:
    assert config.first_difference({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 3]}) == "b[1]"
    assert config.first_difference({"a": 1, "x": 2}, {"a": 1}) == "x"
    assert config.first_difference({"a": True}, {"a": 1}) == "a"
    assert config.first_difference({"a": float("nan")}, {"a": float("nan")}) is None


@examples(ci=400)
@given(NAMES)
@example("x\ntrust_remote_code: true\n#")
@example("é" * 300)
def test_a_run_folder_label_is_one_plain_name(name: str) -> None:
    from pipeline.core import runs

    label = runs.folder_label(name)
    assert label and len(label.encode("utf-8")) <= runs.LABEL_BYTES
    assert all((c.isalnum() and c.isprintable()) or c in "._+-" for c in label)
    assert runs.folder_label("tiny_cpu") == "tiny_cpu"
