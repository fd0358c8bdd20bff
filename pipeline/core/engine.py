"""Launching axolotl on a resolved config, and nothing else: axolotl is the training engine.

What the run folder holds before the launch is `pipeline.core.run_start`'s; the bytecode cache is
`pipeline.core.bytecode`'s, prepared data `pipeline.core.prepared`'s, and the GPUs `pipeline.core.gpus`'.

One process on one device runs axolotl's `axolotl.cli.<command>` module on config.yaml (no accelerate
re-exec: it does not depend on which `accelerate` is first on PATH), through pipeline.in_axolotl.entry, which
differs from `python -m axolotl.cli.<command>` only in skipping the interpreter's teardown after success. Several GPUs go through axolotl's
own launcher (`axolotl train --launcher accelerate|torchrun`), which sets up DDP, FSDP or DeepSpeed from
the config. Output streams to the terminal and into the run's axolotl.log; axolotl's exit status is
returned unchanged. SIGINT and SIGTERM are passed on to axolotl, which saves nothing on its own, so a
resumable run relies on the checkpoints it has already written (see `pipeline train --resume`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from pipeline.core import terminal
from pipeline.core.axolotl_contract import ENTRY, LAUNCHED_ENV, METRICS_ENV, PROFILE_ENV  # noqa: F401 - PROFILE_ENV: the stages set it
from pipeline.core.errors import printable


def environment(metrics_file: Path, offline: bool, extra: Mapping[str, str] | None = None, *,
                gpus: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    if gpus == 1 and "CUDA_VISIBLE_DEVICES" not in env:
        # a one-process run on a machine with several GPUs would otherwise be split across all of them by
        # axolotl's device_map="auto", which fails with "Expected all tensors to be on the same device"
        env["CUDA_VISIBLE_DEVICES"] = "0"
    env.update({
        METRICS_ENV: str(metrics_file),
        "PYTHONUNBUFFERED": "1",
        "AXOLOTL_DO_NOT_TRACK": "1",
        "WANDB_MODE": env.get("WANDB_MODE", "disabled"),
        "TOKENIZERS_PARALLELISM": "false",
    })
    # Triton keeps compiled kernels in ~/.triton/cache already; this keeps autotuning results there too,
    # so a second run of the same shapes does not re-time its kernel configurations
    env.setdefault("TRITON_CACHE_AUTOTUNING", "1")
    if offline:  # every model and dataset is local: never wait on a hub that may be unreachable
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("HF_DATASETS_OFFLINE", "1")
    # the project's package must import inside axolotl's process (the plugin lives here)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    # axolotl's launchers run `torchrun`/`accelerate` from PATH: make it this interpreter's, not another venv's
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    env.update(extra or {})
    return env


def check_gpus(gpus: int | None) -> None:
    """--gpus before anything starts: at least 1, and no more than the machine has (UserError, exit 2)."""
    from pipeline.core import gpus as probe
    from pipeline.core.errors import UserError

    if gpus is None or gpus == 1:
        return
    if gpus < 1:
        raise UserError.at("<command line>", None, "gpus", f"--gpus {gpus}: give 1 or more")
    have = probe.count()
    if gpus > have:
        raise UserError.at("<command line>", None, "gpus", f"--gpus {gpus}, but this machine has {have} usable "
                                                           f"GPU{'s' if have != 1 else ''}; use --gpus {max(have, 1)}")


def command(subcommand: str, config: Path, *, gpus: int = 1, launcher: str = "torchrun",
            args: list[str] | None = None, nodes: Any = None) -> list[str]:
    """The axolotl command line for `train`, `merge_lora`, ... on one process, several GPUs or several nodes.

    Several GPUs go through axolotl's own CLI and its torchrun launcher by default: torchrun needs no
    accelerate config file, and DDP, FSDP or DeepSpeed then follow from the YAML (`fsdp_config`,
    `deepspeed`), as they would for a user running `axolotl train --launcher torchrun` by hand. Several
    nodes (`nodes`, a pipeline.core.topology.Topology) add torchrun's rendezvous arguments, one process or more.
    """
    args = list(args or [])
    if gpus <= 1 and nodes is None:  # axolotl's CLI module, run by pipeline.in_axolotl.entry: a faster exit
        return [sys.executable, "-m", ENTRY, f"axolotl.cli.{subcommand}", str(config), *args]
    cli = subcommand.replace("_", "-")
    launcher_args = ["--num_processes", str(gpus)] if launcher == "accelerate" else [f"--nproc_per_node={gpus}"]
    if nodes is not None:
        launcher, launcher_args = "torchrun", nodes.launcher_args(gpus)
    return [sys.executable, "-m", "axolotl.cli.main", cli, str(config), "--launcher", launcher,
            *args, "--", *launcher_args]


def run(cmd: list[str], env: Mapping[str, str], log_path: Path, *, echo: IO[str] | None = None,
        cwd: Path | None = None, pass_fds: tuple[int, ...] = ()) -> int:
    """Run a child, teeing its output to `echo` (the terminal) and `log_path`; forward SIGINT/SIGTERM.

    Returns the child's exit status; a child killed by a signal gives 128 + the signal number, and so does a
    child that exits 0 after a forwarded signal (axolotl saves and exits 0 on SIGINT: that is no success).
    A child still alive `PIPELINE_INTERRUPT_GRACE_S` (120) seconds after a forwarded signal, or at a second
    one, is killed with its process group, saying so in one line; the status is still the interrupt's.
    `pass_fds` stay open in the child (the run folder's lock, so it is held while axolotl lives). A log
    that cannot be written (full disk) stops being written; the output still reaches the terminal.
    """
    echo = echo if echo is not None else sys.stdout
    received: list[int] = []
    log: IO[bytes] | None = None
    try:
        log = log_path.open("ab")
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
    except OSError:
        _drop_log(log, log_path)
        log = None
    env = {**env, LAUNCHED_ENV: repr(time.time())}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd,
                            start_new_session=True, pass_fds=pass_fds)

    escalated: list[str] = []
    timers: list[threading.Timer] = []

    def kill(why: str) -> None:
        if proc.poll() is None:
            escalated.append(why)
            print(f"axolotl {why}: killed", file=sys.stderr, flush=True)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if len(received) > 1:  # a second Ctrl-C: the user will not wait for axolotl's own end
            kill("was interrupted twice")
            return
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass
        # axolotl's SIGINT handler saves and logs from inside the handler; its log tee holds a plain lock, so a
        # signal that lands during a log line deadlocks it (axolotl 0.19 utils/tee.py): never wait forever
        grace = interrupt_grace()
        timer = threading.Timer(grace, kill, args=(f"did not end within {grace:.0f} s of the interrupt (set "
                                                   f"{GRACE_ENV} to wait longer)",))
        timer.daemon = True
        timers.append(timer)
        timer.start()

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
            if log is not None:
                try:
                    log.write(chunk)
                    log.flush()
                except OSError:
                    _drop_log(log, log_path)
                    log = None
            terminal.relay(echo, chunk.decode("utf-8", "replace"))
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for timer in timers:  # the child has ended: nothing is left to kill
            timer.cancel()
        if log is not None:
            try:
                log.close()
            except OSError:
                pass
    if received and (code == 0 or escalated):  # the interrupt is what ended it, however axolotl left
        return 128 + received[0]
    if code < 0:
        return 128 - code
    return code


#: seconds axolotl may take to end after a forwarded SIGINT/SIGTERM before it is killed
GRACE_ENV = "PIPELINE_INTERRUPT_GRACE_S"


def interrupt_grace() -> float:
    try:
        return max(1.0, float(os.environ.get(GRACE_ENV, "120")))
    except ValueError:
        return 120.0


def _drop_log(log: IO[bytes] | None, log_path: Path) -> None:
    print(printable(f"warning: {log_path} can no longer be written (disk full?); axolotl's output goes to the terminal "
          f"only"), file=sys.stderr)
    try:
        if log is not None:
            log.close()
    except OSError:
        pass
