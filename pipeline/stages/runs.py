"""`pipeline runs`: every run folder under the runs folder, one line each, from its manifest alone.

    pipeline runs [--runs-dir DIR] [--format table|json]

    Run | Config | Stage | Status | Steps | Final loss | Peak memory | Merged | Evaluated

Status is the manifest's (`succeeded`, `interrupted`, `failed`, `running`); a `running` run whose process
is gone from this machine shows as `killed` (it ended without recording how: `pipeline train --resume`).
Peak memory is the whole-run peak of allocated GPU memory, or the process's peak RSS on a CPU. Merged is
`verified` when RUN/merged/ exists and passed merge's logit check, else the last merge's status; Evaluated
is `passed`/`failed` (the gates of `pipeline evaluate`) with the tuned validation loss. Nothing is loaded
but JSON, so it answers at once for hundreds of runs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from pipeline.core import lock, run_outputs, runs, summary
from pipeline.core.errors import printable
from pipeline.core.proc import recorded_alive
from pipeline.core.table import pipe_table

COLUMNS = ("run", "config", "stage", "status", "steps", "final_loss", "peak_memory", "merged", "evaluated")
HEADER = ("Run", "Config", "Stage", "Status", "Steps", "Final loss", "Peak memory", "Merged", "Evaluated")


def main(*, runs_dir: Path, output: str = "table") -> int:
    """Print the runs under `runs_dir` (output: "table" for people, "json" for scripts)."""
    rows = [describe(run) for run in runs.all_runs(runs_dir)]
    if output == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(printable(f"no runs in {runs_dir} (start one with `pipeline smoke` or `pipeline train`)"))
        return 0
    print("\n".join(printable(line) for line in table(rows).split("\n")))  # folder names may hold any byte
    return 0


def describe(run: runs.Run) -> dict[str, Any]:
    m = run.manifest()
    s = _dict(m.get("summary"))
    if not s and m.get("status") == "running" and (records := _metrics(run)):  # killed before it recorded
        s = summary.summarize(records) if any(r.get("kind") == "train" for r in records) else {}
    gpu = bool(s.get("peak_vram_allocated_gib"))
    peak = s.get("peak_vram_allocated_gib") if gpu else s.get("peak_rss_gib")
    merge, evaluation = _dict(m.get("merge")), _dict(m.get("evaluate"))
    models = _dict(evaluation.get("summary"))
    return {
        "run": run.name,
        "path": str(run.path),
        "config": Path(str(_dict(m.get("config")).get("path") or "-")).name,
        "stage": m.get("stage"),
        "status": status(m, run.path),
        "steps": s.get("steps") if isinstance(s.get("steps"), int) else None,
        "final_loss": _number(s.get("final_loss")),
        "eval_loss": s.get("eval_loss"),
        "peak_memory": _number(peak),
        "peak_memory_kind": "vram_allocated" if gpu else "rss",
        "merged": _merged(run, merge),
        "merged_path": str(run.path / "merged") if (run.path / "merged").is_dir() else None,
        "evaluated": status(evaluation) if evaluation else None,
        "tuned_val_loss": _number(_dict(models.get("tuned")).get("val_loss")),
        "base_val_loss": _number(_dict(models.get("base")).get("val_loss")),
        "report": evaluation.get("report"),
        "started": m.get("started"),
    }


def _metrics(run: runs.Run) -> list[dict[str, Any]]:
    """A killed run's metrics, for its row; a damaged file (a FIFO, /dev/zero) is a warning, not the end of
    the listing."""
    try:
        return run.metrics()
    except runs.DamagedRun as exc:
        print(printable(f"warning: {exc.findings[0]}; its steps are not shown"), file=sys.stderr)
        return []


def _merged(run: runs.Run, merge: dict[str, Any]) -> str | None:
    """`verified` only for a merged/ folder the last merge verified and that is still whole; else `damaged`,
    or the last merge's status."""
    if (run.path / "merged").is_dir() and merge.get("status") == "verified":
        return "verified" if run_outputs.merged_problem(run.path) is None else "damaged"
    if os.path.lexists(run.path / "merged") and run_outputs.merged_problem(run.path) is not None:
        return "damaged"
    return status(merge) if merge else None


def _dict(value: Any) -> dict[str, Any]:
    """A manifest field that should be a mapping; anything else (a damaged or hand-edited file) reads as empty."""
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def status(record: dict[str, Any], folder: Path | None = None) -> str | None:
    """A record's status, with `running` checked against the folder's lock, else the process it names."""
    value = record.get("status")
    if value != "running":
        return value if isinstance(value, str) else None
    if folder is not None and (folder / lock.NAME).exists():  # the lock knows, even where a pid was reused
        return value if lock.holder(folder) is not None else "killed"
    return "killed" if recorded_alive(record) is False else value  # None: another host's, or not known


def table(rows: list[dict[str, Any]]) -> str:
    def cells(r: dict[str, Any]) -> list[str]:
        peak = r["peak_memory"]
        evaluated = r["evaluated"] or "-"
        if r["tuned_val_loss"] is not None and r["base_val_loss"] is not None:
            evaluated += f" ({r['base_val_loss']:.3f} -> {r['tuned_val_loss']:.3f})"
        return [
            r["run"], r["config"], r["stage"] or "-", r["status"] or "-",
            "-" if r["steps"] is None else str(r["steps"]),
            "-" if r["final_loss"] is None else f"{r['final_loss']:.3f}",
            "-" if peak is None else f"{peak:.2f} GiB" + (" RSS" if r["peak_memory_kind"] == "rss" else ""),
            r["merged"] or "-", evaluated,
        ]

    body = [cells(r) for r in rows]
    return pipe_table(HEADER, body)
