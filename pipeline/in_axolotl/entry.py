"""Run one of axolotl's CLI modules in this process, and leave without tearing the interpreter down.

    python -m pipeline.in_axolotl.entry axolotl.cli.train CONFIG [ARGS...]

is `python -m axolotl.cli.train CONFIG [ARGS...]`: the same module, the same `fire` entry point
(`do_cli`), the same arguments. Only the end differs. After a run that returned normally, output is
flushed, the atexit handlers run (logging's shutdown, wandb's finish, ...), and the process leaves with
`os._exit(0)`, skipping Python's finalisation: tearing down some thousands of modules and the objects
torch, datasets and axolotl still hold, which costs wall time and changes nothing once every file has been
written (see benchmarks/README.md). `sys.exit(0)` counts as returning normally (axolotl's SIGINT handler
saves the model and calls it). A failure (an exception, or `sys.exit` with a non-zero status) leaves the
normal way, with its traceback and status.

Several GPUs go through axolotl's own launcher (see pipeline.core.engine).
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys

ALLOWED_PREFIX = "axolotl.cli."


def main(argv: list[str]) -> None:
    if not argv or not argv[0].startswith(ALLOWED_PREFIX):
        sys.exit(f"usage: python -m pipeline.in_axolotl.entry {ALLOWED_PREFIX}<command> CONFIG [ARGS...]")
    run(argv[0], argv[1:])


def run(module_name: str, args: list[str]) -> None:
    """Call MODULE.do_cli through fire with ARGS; on success, exit 0 without finalisation."""
    import fire

    module = importlib.import_module(module_name)
    # as `python -m MODULE ARGS` would see it: axolotl also parses sys.argv itself (HfArgumentParser)
    sys.argv = [module.__file__ or module_name, *args]
    try:
        fire.Fire(module.do_cli, command=args)
    except SystemExit as stop:
        # axolotl's SIGINT handler saves the model and calls sys.exit(0): a clean end, left the same fast way
        # (its files are written; finalising torch and axolotl adds wall time); any other status leaves normally
        if stop.code not in (None, 0):
            raise
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
