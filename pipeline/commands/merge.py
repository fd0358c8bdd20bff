"""`pipeline merge`: a run's adapter into its base model, verified by the logits (stage: pipeline/stages/merge.py)."""

from __future__ import annotations

import argparse

from pipeline.commands._shared import Subparsers, add_command, add_runs_dir


def register(subparsers: Subparsers) -> argparse.ArgumentParser:
    p = add_command(subparsers, "merge", help="merge a run's adapter into its base model and verify the logits",
                    description="Merge RUN's adapter into its base model through axolotl's streaming merge, "
                                "into a temporary folder renamed to RUN/merged only when complete and "
                                "verified (merged logits vs base + adapter on the validation prompts). An "
                                "existing RUN/merged is kept unless --force.",
                    examples=[
                        ("the newest finished training run (what `nox -s merge` runs)",
                         "pipeline merge --auto"),
                        ("one run by name, replacing the RUN/merged it already has",
                         "pipeline merge 20260102-093000-lora_style_transfer-train --force"),
                    ])
    p.add_argument("run", nargs="?", default=None, metavar="RUN", help="run name under the runs folder, or a path")
    p.add_argument("--auto", action="store_true", help="merge the newest finished training run")
    p.add_argument("--force", action="store_true", help="replace an existing RUN/merged")
    add_runs_dir(p, folders="reads")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pipeline.core import runs
    from pipeline.stages import merge as stage

    return stage.main(args.run, auto=args.auto, force=args.force, runs_dir=runs.runs_root(args.runs_dir))
