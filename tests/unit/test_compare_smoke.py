"""tools/compare-smoke: a smoke JSON against a stored baseline (what .github/workflows/gpu.yml runs)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

TOOL = ROOT / "tools" / "compare-smoke"
RESULT = {
    "config": "configs/lora_style_transfer.yaml", "run": "r1", "exit_code": 0, "ok": True,
    "trainable_params": 167772160, "final_loss": 10.5, "peak_memory_gib": 24.46, "throughput_tok_s": 6300.0,
}


def compare(tmp_path: Path, baseline: list[dict], current: list[dict], *extra: str):
    paths = []
    for name, results in (("baseline", baseline), ("current", current)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"results": results}))
        paths.append(str(path))
    return subprocess.run([sys.executable, str(TOOL), *paths, *extra], capture_output=True, text=True)


def changed(**figures) -> dict:
    result = copy.deepcopy(RESULT)
    result.update(figures)
    return result


def test_the_same_figures_pass(tmp_path):
    proc = compare(tmp_path, [RESULT], [changed(run="r2")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "REGRESSION" not in proc.stdout


@pytest.mark.parametrize("figures", [
    {"final_loss": 11.1},           # 5.7 % above a 5 % tolerance
    {"final_loss": 9.9},
    {"trainable_params": 167772161},
    {"peak_memory_gib": 27.0},      # 10.4 % more memory
    {"throughput_tok_s": 5000.0},   # 20.6 % slower
    {"exit_code": 3},
    {"ok": False},
    {"final_loss": None},
])
def test_a_regression_fails_and_names_the_figure(tmp_path, figures):
    proc = compare(tmp_path, [RESULT], [changed(**figures)])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    flagged = [line for line in proc.stdout.splitlines() if line.endswith("REGRESSION |")]
    assert [line.split("|")[2].strip() for line in flagged] == [
        {"exit_code": "exit_code", "ok": "bounds ok"}.get(k, k) for k in figures
    ]


def test_within_tolerance_passes_and_tolerances_are_options(tmp_path):
    near = changed(final_loss=10.9, peak_memory_gib=26.5, throughput_tok_s=5100.0)
    assert compare(tmp_path, [RESULT], [near]).returncode == 0
    assert compare(tmp_path, [RESULT], [near], "--loss-rtol", "0.01").returncode == 1


def test_a_figure_the_baseline_lacks_is_not_compared(tmp_path):
    cpu_baseline = changed(peak_memory_gib=None)
    assert compare(tmp_path, [cpu_baseline], [changed(peak_memory_gib=99.0)]).returncode == 0


def test_a_config_missing_from_the_current_run_is_bad_input(tmp_path):
    other = changed(config="configs/qlora_style_transfer.yaml")
    proc = compare(tmp_path, [RESULT, other], [RESULT])
    assert proc.returncode == 2
    assert "qlora_style_transfer.yaml" in proc.stderr


def test_a_file_that_is_not_a_smoke_json_is_bad_input(tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    proc = subprocess.run([sys.executable, str(TOOL), str(junk), str(junk)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "pipeline smoke --json" in proc.stderr
