"""The `pipeline` command line: it parses, then calls one stage (one module per command: pipeline/commands/).

Exit codes mean the same in every command:
  0  success: every planned step ran, every bound and gate held
  1  the run finished but a bound, a gate or (with --strict) a warning failed, or its data changed meanwhile
  2  bad input (config, data, arguments), a runs folder that cannot be written, or a run another command
     is writing: one line per problem, nothing written
  3  axolotl or another child process failed, the disk filled during a run, or a run stopped short of its
     steps (its log is in the run folder); in a run over several nodes, also a node that never joined
     (node-missing) or stopped during training (node-lost)
  130  interrupted (Ctrl-C or SIGTERM); the run folder is kept, `pipeline train --resume` continues
What holds when something goes wrong: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import os
import sys

from pipeline import __version__
from pipeline.commands import register_all
from pipeline.commands._shared import (
    CPU_DEFAULT,
    CPU_TRAIN_DEFAULT,
    GPU_DEFAULT,
    default_configs,
    default_train_config,
)
from pipeline.core import terminal
from pipeline.core.agreement import NodeLost
from pipeline.core.errors import ExitCode, Finding, UserError, WriteRefused

#: smoke's and train's defaults live in pipeline/commands/_shared.py; they stay importable from here
__all__ = ["CPU_DEFAULT", "CPU_TRAIN_DEFAULT", "GPU_DEFAULT", "build_parser", "default_configs",
           "default_train_config", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; each command adds its own (pipeline/commands/, one module per command)."""
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Reproducible LoRA/QLoRA fine-tuning on axolotl: check a config in seconds, smoke-test it "
                    "for a few steps against its bounds, train, merge and evaluate, each run in its own "
                    "folder with a manifest of what produced it.",
        epilog=__doc__.split("\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    register_all(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. What it prints is guarded (core/terminal): escaped, and a stream that
    cannot be written is one `output-unwritable` line on the other, exit 3, once the command has ended."""
    with terminal.guarded() as (out, err):
        code = _command(argv)
        lost = [s for s in (out, err) if s.failure is not None]
        for stream in lost:
            other = err if stream is out else out
            if other.failure is not None:  # neither works: the exit code is all that can tell
                continue
            print(Finding(f"<{stream.name}>", None, "output-unwritable",
                          f"cannot write to {stream.name} ({stream.failure}); what was not shown is in the run "
                          f"folder's manifest and log, where the command made one"), file=other)
        return code if not lost or code != int(ExitCode.OK) else int(ExitCode.ENGINE)


def _command(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, a usage error: argparse has printed what it had to
        return exc.code if isinstance(exc.code, int) else int(ExitCode.USAGE)
    if not args.command:
        parser.print_help()
        return int(ExitCode.USAGE)
    try:
        os.getcwd()
    except OSError as exc:  # every relative path would fail somewhere inside, each its own way
        print(Finding("<working folder>", None, "cwd-missing",
                      f"the working folder cannot be read ({exc.strerror}): it was deleted or moved; cd into an "
                      f"existing folder"), file=sys.stderr)
        return int(ExitCode.USAGE)
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    from pipeline.core import bytecode, engine

    bytecode.use_bytecode_cache()
    try:
        if getattr(args, "check_gpus", False):  # smoke, train: a --gpus count the machine lacks fails here,
            engine.check_gpus(args.gpus)        # not inside axolotl after its slow imports
        return int(args.func(args))
    except UserError as exc:
        for finding in exc.findings:
            print(finding, file=sys.stderr)
        return int(ExitCode.USAGE)
    except (WriteRefused, NodeLost) as exc:  # a disk that refused, a node that never joined: exit 3
        print(exc.finding, file=sys.stderr)
        return int(ExitCode.ENGINE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
