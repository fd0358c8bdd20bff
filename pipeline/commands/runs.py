"""`pipeline runs`: the run folders, from their manifests alone (stage: pipeline/stages/runs.py)."""

from __future__ import annotations

import argparse

from pipeline.commands._shared import Subparsers, add_command, add_runs_dir


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = add_command(subparsers, "runs", help="list runs: config, status, steps, final loss, peak memory, merged, evaluated",
                    description="List the run folders under the runs folder, oldest first, from their "
                                "manifests: Run | Config | Stage | Status | Steps | Final loss | Peak memory "
                                "| Merged | Evaluated.",
                    examples=[
                        ("what you ran here, last week included", "pipeline runs"),
                        ("the same as JSON, for a script, from another runs folder",
                         "pipeline runs --format json --runs-dir /data/runs"),
                    ])
    p.add_argument("--format", choices=("table", "json"), default="table", help="table for people, json for scripts")
    add_runs_dir(p, folders="reads")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pipeline.core import runs
    from pipeline.stages import runs as stage

    return stage.main(runs_dir=runs.runs_root(args.runs_dir), output=args.format)
