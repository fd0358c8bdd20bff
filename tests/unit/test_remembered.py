"""A config that passed its checks is not checked again until its content, the overrides, its data's
content, the checking code or the target change (pipeline.checks.remembered)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support import ROOT

from pipeline import checks
from pipeline.checks import review as inspect_mod

TINY = "configs/tiny_cpu.yaml"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "data", tmp_path / "data")
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "tiny_cpu.yaml", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often the full checks ran (a remembered result does not run them)."""
    seen: list[int] = []
    real = inspect_mod.inspect

    def counting(*args, **kwargs):
        seen.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(inspect_mod, "inspect", counting)
    return seen


def test_a_passed_config_is_remembered_until_its_data_changes(project, tmp_path, calls):
    cache = tmp_path / "checks"
    first = checks.run(TINY, remember=cache)
    assert not first.errors and len(calls) == 1 and len(list(cache.iterdir())) == 1

    assert checks.run(TINY, remember=cache).findings == first.findings
    assert len(calls) == 1  # remembered: the rules did not run again

    rows = project / "data" / "processed" / "visions_training.jsonl"
    rows.write_text(rows.read_text() + rows.read_text().splitlines()[0] + "\n")
    checks.run(TINY, remember=cache)
    assert len(calls) == 2  # the data changed: checked afresh

    path = project / "configs" / "tiny_cpu.yaml"
    path.write_text(path.read_text().replace("lora_r: 8", "lora_r: 16"))
    checks.run(TINY, remember=cache)
    assert len(calls) == 3  # the config changed: checked afresh


def test_a_same_size_edit_with_the_same_mtime_is_checked_afresh(project, tmp_path, calls):
    """The key is the data's content: size and modification time are not evidence of sameness."""
    cache = tmp_path / "checks"
    rows = project / "data" / "processed" / "visions_training.jsonl"
    checks.run(TINY, remember=cache)
    before = os.stat(rows)
    text = rows.read_text()
    i = text.index("the")  # one letter changed: same size
    rows.write_text(text[:i] + "The" + text[i + 3:])
    os.utime(rows, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(rows).st_size == before.st_size and os.stat(rows).st_mtime_ns == before.st_mtime_ns
    checks.run(TINY, remember=cache)
    assert len(calls) == 2


def test_overrides_are_part_of_the_key_and_are_checked(project, tmp_path, calls):
    cache = tmp_path / "checks"
    loaded = checks.with_overrides(checks.config.load(TINY), {})
    assert not checks.run(loaded, remember=cache).errors
    with_bf16 = checks.with_overrides(checks.config.load(TINY), {"bf16": True})
    report = checks.run(with_bf16, remember=cache)
    assert [f.rule for f in report.errors] == ["cpu-bf16"]  # not the remembered clean result
    assert len(calls) == 2


def test_a_config_with_errors_is_checked_every_time(project, tmp_path, calls):
    path = project / "configs" / "tiny_cpu.yaml"
    path.write_text(path.read_text().replace("lora_r: 8", "lora_r: 0"))
    for expected in (1, 2):
        assert checks.run(TINY, remember=tmp_path / "checks").errors
        assert len(calls) == expected
    assert not (tmp_path / "checks").exists() or not os.listdir(tmp_path / "checks")


def test_no_cache_dir_means_no_memory(project, calls):
    for _ in range(2):
        checks.run(TINY)
    assert len(calls) == 2


def test_a_corrupt_entry_is_checked_afresh(project, tmp_path, calls):
    cache = tmp_path / "checks"
    checks.run(TINY, remember=cache)
    (entry,) = cache.iterdir()
    entry.write_text('{"findings": [{"path": 1}], "files": {}}')
    assert not checks.run(TINY, remember=cache).errors
    assert len(calls) == 2


def test_a_remembered_result_keeps_the_schedule_a_runs_plan_reads(tmp_path):
    """One bounded read gives the findings and the schedule facts; a result stored without them gives None."""
    from pipeline.checks import remembered
    from pipeline.core.errors import Finding

    found = [Finding("c.yaml", 3, "some-rule", "a message", "warning")]
    schedule = {"sequences": 13, "exact": True, "total_steps": 9, "total_exact": True}
    remembered.store(tmp_path, "k1", found, [], schedule)
    remembered.store(tmp_path, "k2", found, [])
    hit = remembered.recall(tmp_path, "k1")
    assert hit is not None and hit.findings == found and hit.schedule == schedule
    assert remembered.recall(tmp_path, "k2").schedule is None
