"""`pipeline evaluate`: base vs tuned (and merged) on a run's validation set (stage: pipeline/stages/evaluate.py)."""

from __future__ import annotations

import argparse

from pipeline.commands._shared import Subparsers, add_command, add_runs_dir
from pipeline.core.errors import UserError


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = add_command(subparsers, "evaluate", help="base vs tuned (and merged): loss, chrF, style, content, retention; "
                                                 "report.md/html",
                    description="Evaluate RUN on its validation set against the base model: validation loss "
                                "and perplexity, greedy generations scored with chrF, style and content "
                                "preservation, and perplexity on held-out general text. Writes "
                                "RUN/eval/report.md, report.html and PNG charts; exit 1 when a gate "
                                "(pipeline.evaluate.gates in the config) is missed.",
                    examples=[
                        ("the newest finished training run (what `nox -s eval` runs)",
                         "pipeline evaluate"),
                        ("one run, by its path",
                         "pipeline evaluate runs/20260102-093000-lora_style_transfer-train"),
                    ])
    p.add_argument("run", nargs="?", default=None, metavar="RUN",
                   help="run name under the runs folder, or a path (default: the newest finished training run)")
    p.add_argument("--latest", action="store_true", help="evaluate the newest finished training run (the default)")
    add_runs_dir(p, folders="reads")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.run and args.latest:
        raise UserError.at("<command line>", None, "evaluate-which", "name a RUN or pass --latest, not both")
    from pipeline.core import runs
    from pipeline.stages import evaluate as stage

    return stage.main(args.run, runs_dir=runs.runs_root(args.runs_dir))
