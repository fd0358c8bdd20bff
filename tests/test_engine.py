"""The launcher's part of the resolved config, and what the launching process must not import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.core import engine


def test_small_data_is_prepared_in_one_process(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"messages": []}\n' * 40)
    cfg = engine.prepare({"sequence_len": 64}, tmp_path / "out", tmp_path / "cache", [data])
    assert cfg["dataset_num_proc"] == 1


def test_large_data_and_an_explicit_setting_keep_their_process_count(tmp_path):
    data = tmp_path / "rows.jsonl"
    with data.open("wb") as f:
        f.truncate(engine.SMALL_DATA_BYTES + 1)
    assert "dataset_num_proc" not in engine.prepare({}, tmp_path / "out", tmp_path / "cache", [data])
    small = tmp_path / "small.jsonl"
    small.write_text("{}\n")
    assert engine.prepare({"dataset_num_proc": 8}, tmp_path, tmp_path, [small])["dataset_num_proc"] == 8
    assert "dataset_num_proc" not in engine.prepare({"dataset_processes": 8}, tmp_path, tmp_path, [small])


def test_the_launching_process_does_not_import_axolotl_or_torch():
    """The child pays for axolotl's imports (seconds); the stages that launch it must not pay twice."""
    code = ("import sys; import pipeline.cli, pipeline.smoke, pipeline.train, pipeline.core.engine; "
            "print(sorted(m for m in ('axolotl', 'torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "[]"
