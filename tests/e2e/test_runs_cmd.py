"""`pipeline runs`: the table and JSON from manifests alone."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from pipeline.core import runs
from pipeline.stages import runs as runs_cmd

DEAD_PID = 2**22 + 12345  # above the default pid_max: no such process


def make(root: Path, name: str, manifest: dict, merged: bool = False) -> None:
    path = root / name
    path.mkdir(parents=True)
    runs.write_json(path / "manifest.json", {"run": name, **manifest})
    if merged:  # a whole merged model, as far as its headers tell: `verified` needs it whole
        (path / "merged").mkdir()
        (path / "merged" / "config.json").write_text(json.dumps({"model_type": "llama"}))
        header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
        (path / "merged" / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)


def fill(root: Path) -> None:
    make(root, "20260101-000000-tiny_cpu-smoke", {
        "stage": "smoke", "status": "succeeded", "config": {"path": "/p/configs/tiny_cpu.yaml"},
        "summary": {"steps": 3, "final_loss": 7.554, "peak_rss_gib": 0.82, "peak_vram_allocated_gib": 0.0}})
    make(root, "20260102-000000-lora-train", {
        "stage": "train", "status": "succeeded", "config": {"path": "/p/configs/lora.yaml"},
        "summary": {"steps": 108, "final_loss": 1.234, "peak_vram_allocated_gib": 24.46, "peak_rss_gib": 9.0},
        "merge": {"status": "verified"},
        "evaluate": {"status": "passed", "report": "/r/eval/report.md",
                     "summary": {"base": {"val_loss": 2.5}, "tuned": {"val_loss": 1.1}}}}, merged=True)
    make(root, "20260103-000000-tiny_cpu-train", {
        "stage": "train", "status": "running", "pid": DEAD_PID, "host": socket.gethostname(),
        "config": {"path": "/p/configs/tiny_cpu.yaml"}, "summary": {},
        "merge": {"status": "failed-verification"}})
    make(root, "20260104-000000-tiny_cpu-train", {
        "stage": "train", "status": "running", "pid": os.getpid(), "host": socket.gethostname(),
        "config": {"path": "/p/configs/tiny_cpu.yaml"}})
    (root / "smoke-20260101-000000.json").write_text("{}")  # not a run folder
    (root / "half-made").mkdir()  # no manifest: not a run


def test_the_table_has_one_row_per_run_with_what_a_user_looks_for(tmp_path, capsys):
    fill(tmp_path)
    assert runs_cmd.main(runs_dir=tmp_path) == 0
    header, rule, *rows = capsys.readouterr().out.splitlines()
    assert [c.strip() for c in header.split("|")[1:-1]] == list(runs_cmd.HEADER)
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in rows]
    assert cells == [
        ["20260101-000000-tiny_cpu-smoke", "tiny_cpu.yaml", "smoke", "succeeded", "3", "7.554", "0.82 GiB RSS",
         "-", "-"],
        ["20260102-000000-lora-train", "lora.yaml", "train", "succeeded", "108", "1.234", "24.46 GiB", "verified",
         "passed (2.500 -> 1.100)"],
        ["20260103-000000-tiny_cpu-train", "tiny_cpu.yaml", "train", "killed", "-", "-", "-",
         "failed-verification", "-"],
        ["20260104-000000-tiny_cpu-train", "tiny_cpu.yaml", "train", "running", "-", "-", "-", "-", "-"],
    ]


def test_json_carries_the_same_rows_with_paths_and_units(tmp_path, capsys):
    fill(tmp_path)
    assert runs_cmd.main(runs_dir=tmp_path, output="json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in rows] == sorted(r["run"] for r in rows)
    lora = rows[1]
    assert lora["peak_memory"] == 24.46 and lora["peak_memory_kind"] == "vram_allocated"
    assert lora["merged_path"] == str(tmp_path / "20260102-000000-lora-train" / "merged")
    assert lora["report"] == "/r/eval/report.md" and lora["tuned_val_loss"] == 1.1
    assert rows[0]["peak_memory_kind"] == "rss"


def test_no_runs_is_not_an_error(tmp_path, capsys):
    assert runs_cmd.main(runs_dir=tmp_path / "none") == 0
    assert "no runs in" in capsys.readouterr().out
    assert runs_cmd.main(runs_dir=tmp_path / "none", output="json") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_killed_run_shows_the_steps_its_metrics_reached_and_odd_fields_do_not_break_the_list(tmp_path, capsys):
    make(tmp_path, "20260101-000000-tiny_cpu-train", {
        "stage": "train", "status": "running", "pid": DEAD_PID, "host": socket.gethostname(),
        "config": {"path": "/p/configs/tiny_cpu.yaml"}})
    (tmp_path / "20260101-000000-tiny_cpu-train" / "metrics.jsonl").write_text("".join(
        json.dumps({"kind": "train", "step": s, "loss": 8.0 - s / 10}) + "\n" for s in range(1, 6)))
    make(tmp_path, "20260102-000000-odd-train", {"stage": "train", "status": 7, "summary": "lost",
                                                 "config": [], "merge": "x", "evaluate": {"summary": []}})
    assert runs_cmd.main(runs_dir=tmp_path) == 0
    _, _, *rows = capsys.readouterr().out.splitlines()
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in rows]
    assert cells[0][3:6] == ["killed", "5", "7.500"]
    assert cells[1][0] == "20260102-000000-odd-train" and cells[1][3:6] == ["-", "-", "-"]
