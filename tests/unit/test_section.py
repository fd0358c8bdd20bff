"""The `pipeline:` section has one owner (pipeline.core.section): every key known, every shape checked,
with the line and the nearest name, by check, smoke and train alike, after `--set`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import checks
from pipeline.core import config, section
from pipeline.core.errors import UserError


def load(tmp_path: Path, text: str) -> config.LoadedConfig:
    path = tmp_path / "c.yaml"
    path.write_text("base_model: pipeline://tiny-llama\n" + text)
    return config.load(path)


@pytest.mark.parametrize("text, rule, line, words", [
    ("pipeline:\n  bound:\n    final_loss: 3\n", "pipeline-unknown", 3, "did you mean 'bounds'?"),
    ("pipeline:\n  smoke: 5\n", "pipeline-shape", 3, "pipeline.smoke must be a mapping"),
    ("pipeline:\n  smoke:\n    max_step: 3\n", "pipeline-unknown", 4, "did you mean 'max_steps'?"),
    ("pipeline:\n  smoke:\n    max_steps: 0\n", "pipeline-shape", 4, "whole number >= 1"),
    ("pipeline:\n  bounds:\n    peak_vram: 3\n", "bounds-unknown", 4, "did you mean 'peak_vram_gib'?"),
    ("pipeline:\n  bounds:\n    final_loss: [1]\n", "bounds-shape", 4, "[min, max]"),
    ("pipeline:\n  bounds:\n    final_loss: [3, 1]\n", "bounds-shape", 4, "min <= max"),
    ("pipeline:\n  bounds:\n    peak_rss_gib: .nan\n", "bounds-shape", 4, "must be a number"),
    ("pipeline:\n  bounds: [1, 2]\n", "bounds-shape", 3, "must be a mapping"),
    ("pipeline:\n  evaluate:\n    gates:\n      chrf: 60\n", "eval-gates", 5, "did you mean 'chrf_min'?"),
    ("pipeline:\n  evaluate:\n    max_new_tokens: -1\n", "eval-settings", 4, "whole number >= 1"),
    ("pipeline: 7\n", "pipeline-shape", 2, "pipeline must be a mapping"),
])
def test_every_mistake_is_one_finding_with_its_line(tmp_path, text, rule, line, words):
    (finding,) = section.validate(load(tmp_path, text))
    assert (finding.rule, finding.line) == (rule, line), finding
    assert words in finding.message


def test_a_well_formed_section_and_no_section_are_clean(tmp_path, root):
    assert section.validate(load(tmp_path, "")) == []
    shipped = config.load(root / "configs" / "tiny_cpu.yaml")
    assert section.validate(shipped) == []
    assert section.bounds(shipped) and section.smoke_steps(shipped) in (None, 3)


def test_values_are_read_after_overrides(tmp_path):
    loaded = load(tmp_path, "pipeline:\n  bounds:\n    peak_vram_gib: 20\n")
    raised = checks.with_overrides(loaded, {"pipeline.bounds.peak_vram_gib": 200, "pipeline.smoke.max_steps": 5})
    assert section.bounds(raised) == {"peak_vram_gib": 200}
    assert section.smoke_steps(raised) == 5
    assert section.bounds(loaded) == {"peak_vram_gib": 20}  # the loaded file is not changed


def test_an_empty_section_takes_overrides(tmp_path):
    loaded = checks.with_overrides(load(tmp_path, "pipeline:\n"), {"pipeline.smoke.max_steps": 2})
    assert section.smoke_steps(loaded) == 2


def test_reading_a_broken_section_is_a_user_error_not_a_traceback(tmp_path):
    with pytest.raises(UserError) as exc:
        section.smoke_steps(load(tmp_path, "pipeline:\n  smoke: 5\n"))
    assert [f.rule for f in exc.value.findings] == ["pipeline-shape"]


@pytest.mark.parametrize("key", ["datasets.b.c", "datasets.5.path", "base_model.x"])
def test_a_dotted_override_that_leads_nowhere_is_one_line(tmp_path, key):
    loaded = load(tmp_path, "datasets:\n  - path: a.jsonl\n")
    with pytest.raises(UserError) as exc:
        checks.with_overrides(loaded, {key: 1})
    (finding,) = exc.value.findings
    assert finding.rule == "override-path" and key in finding.message


def test_check_reports_section_findings_like_any_other(tmp_path):
    report = checks.run(load(tmp_path, "pipeline:\n  bound:\n    final_loss: 3\n"))
    assert "pipeline-unknown" in [f.rule for f in report.errors]
