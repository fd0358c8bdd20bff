"""The `pipeline` subcommands: one module per command a user types, each registering its own parser.

The layout is accelerate's `commands/` and torchtune's `_cli/`: `pipeline/cli.py` builds the top-level
parser and hands its subparsers to `register` of every module in `COMMANDS`, in the order `pipeline --help`
lists them. A command module holds everything about its command line and nothing else:

- `register(subparsers)` adds the command's parser (help, description, options, an epilog of 1-3 examples)
  and sets `func=run` as its default; smoke and train also set `check_gpus=True`, which asks `cli.main` to
  check `--gpus` before anything starts.
- `run(args) -> int` turns the parsed namespace into one call of its stage's `main(...)` (`pipeline/stages/check.py`,
  `smoke.py`, ...; build-model calls `core/models`). The stage is imported inside `run`, so `pipeline --help`
  and a typo in an option import no torch and no axolotl.

Arguments several commands share (`--set KEY=VALUE`, `--runs-dir`), the parser's formatter and the epilog's
layout are defined once, in `_shared.py`; a test (tests/unit/test_cli.py) keeps them there. `cli.main` owns
what is common to every command: no command prints the help (exit 2), the bytecode cache, the `--gpus`
check, and turning a `UserError` or Ctrl-C into its exit code. Commands never call each other, as stages
never do.
"""

from __future__ import annotations

from pipeline.commands import build_model, check, evaluate, merge, runs, smoke, train
from pipeline.commands._shared import Subparsers

#: in the order `pipeline --help` lists them
COMMANDS = (check, smoke, train, merge, evaluate, runs, build_model)


def register_all(subparsers: Subparsers) -> None:
    for command in COMMANDS:
        command.register(subparsers)
