"""Launching axolotl on a resolved config, and nothing else: axolotl is the training engine.

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

from pipeline.core.prepared import drop_incomplete_prepared, prepared_key
from pipeline.in_axolotl import ENTRY, LAUNCHED_ENV, METRICS_ENV, PLUGINS, PROFILE_ENV, TOKEN_LOSS_PLUGIN  # noqa: F401 - the contract

#: "0" turns the bytecode cache below off
PYCACHE_ENV = "PIPELINE_PYCACHE"
#: packages whose top-level bytecode tells whether the installed stack carries any (they are looked up, not
#: imported)
BYTECODE_PROBES = ("axolotl", "transformers", "torch", "peft", "datasets", "trl")


def bytecode_cache() -> Path | None:
    """Where compiled bytecode should go when the environment forbids writing it and none was installed.

    CUDA images commonly set PYTHONDONTWRITEBYTECODE=1 (so do ours: it keeps image layers clean). That
    costs nothing where pip compiled the packages at install time, but packages unpacked rather than
    pip-installed (an offline bundle, some images' own stacks) then carry no .pyc at all, and every
    axolotl process compiles their sources again, a large share of its startup (see benchmarks/README.md).
    There, bytecode is kept in $PIPELINE_CACHE/pycache (PYTHONPYCACHEPREFIX: a mirror tree, never a file
    beside the sources). Python then ignores the __pycache__ folders beside the sources, so the first run
    compiles everything once and every later run reads it back. That is why it is used only where one of
    BYTECODE_PROBES lacks its bytecode: in a pip-installed image (ours) every `docker run` would otherwise
    start by compiling what is already compiled.

    Returns:
        `$PIPELINE_CACHE/pycache`; None when bytecode is written normally, when every probe has its
        bytecode, when the user set a PYTHONPYCACHEPREFIX of their own, or with PIPELINE_PYCACHE=0.
    """
    if os.environ.get(PYCACHE_ENV) == "0" or os.environ.get("PYTHONPYCACHEPREFIX"):
        return None
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") and not sys.dont_write_bytecode:
        return None
    if not _installed_without_bytecode(BYTECODE_PROBES):
        return None
    from pipeline.core.cache import cache_dir

    return cache_dir() / "pycache"


def _installed_without_bytecode(packages: tuple[str, ...]) -> bool:
    """Whether one of these installed packages has no .pyc of its __init__ beside it for this interpreter."""
    import importlib.util

    for name in packages:
        try:
            spec = importlib.util.find_spec(name)  # a top-level name: found on sys.path, not imported
        except (ImportError, ValueError):
            continue
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        source = Path(spec.origin)
        pyc = source.parent / "__pycache__" / f"{source.stem}.{sys.implementation.cache_tag}.pyc"
        if not pyc.is_file():
            return True
    return False


def use_bytecode_cache() -> None:
    """Adopt bytecode_cache() for this command: decided once, when the CLI starts.

    This process uses it for its own imports (tokenizers and transformers for the checks), and it goes
    into os.environ, so axolotl and everything axolotl starts (torchrun's workers) inherit it through
    environment() with no second decision.
    """
    prefix = bytecode_cache()
    if prefix is None or sys.pycache_prefix is not None:  # `-X pycache_prefix=...` is the user's own
        return
    sys.pycache_prefix = str(prefix)
    sys.dont_write_bytecode = False
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


#: settings every run gets unless the config sets them itself
RUN_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1,
    "include_tkps": True,
}


#: below this much training data (bytes of the files, all datasets), tokenising and packing run in one process
SMALL_DATA_BYTES = 32 * 2**20


def prepare(axolotl_cfg: Mapping[str, Any], output_dir: Path, cache: Path,
            data_files: list[Path] | None = None, data_hashes: Mapping[str, str] | None = None,
            loss_weighting: str = "per-token") -> dict[str, Any]:
    """The config axolotl runs: output into the run folder, our plugins (the per-token loss's unless
    `loss_weighting` is "per-micro-batch"), prepared data keyed by content.

    Small data (at most SMALL_DATA_BYTES, 32 MiB, over all data files) gets `dataset_num_proc: 1` unless
    the config sets `dataset_num_proc` or `dataset_processes`. Axolotl defaults to one process per core,
    and its multipack sampler then packs in a fresh pool of forked workers each time it counts batches,
    each worker compiling the numba packer anew: on small data that costs more than parallel tokenisation
    saves (see benchmarks/README.md). The bins do not depend on the process count (packing groups are
    100,000 rows), so what is trained is unchanged. Past SMALL_DATA_BYTES, parallel tokenisation keeps its
    place.
    """
    cfg = dict(axolotl_cfg)
    for key, value in RUN_DEFAULTS.items():
        cfg.setdefault(key, value)
    if data_files and "dataset_num_proc" not in cfg and "dataset_processes" not in cfg:
        size = sum(p.stat().st_size for p in data_files if p.is_file())
        if size <= SMALL_DATA_BYTES:
            cfg["dataset_num_proc"] = 1
    cfg["output_dir"] = str(output_dir)
    # axolotl keys its prepared data by dataset settings and the tokenizer's name, never by file content:
    # an edited file would train its old rows. One folder per content key under the shared cache (or under
    # the config's own dataset_prepared_path) lets a repeat run skip tokenisation and nothing else
    base = Path(cfg.get("dataset_prepared_path") or cache / "prepared")
    cfg["dataset_prepared_path"] = str(base / prepared_key(cfg, data_hashes or {}))
    plugins = list(cfg.get("plugins") or [])
    ours = [*PLUGINS, TOKEN_LOSS_PLUGIN] if loss_weighting == "per-token" else list(PLUGINS)
    plugins += [p for p in ours if p not in plugins]
    cfg["plugins"] = plugins
    return cfg


def start_run(stage: str, resolved: Any, runs_dir: Path, **manifest: Any) -> Any:
    """A new run folder for `stage`, set up the one way every stage does it: the config axolotl will run
    (config.yaml, see `prepare`), the user's config as written (source.yaml) and the manifest, with the
    `--set` overrides and the bounds the run was started with. `resolved` is a config.ResolvedConfig.

    The data files are hashed once, here: the manifest and the prepared-data key hold the same sha256. The
    folder comes back locked by this process (`pipeline.core.lock`); one that cannot be set up completely
    (a full disk) is removed again, so no run folder is ever left without its manifest.
    """
    import hashlib

    from pipeline.core import cache, provenance, runs, safeio, section
    from pipeline.core.config import remote_code_origin, run_config_text

    cfg = resolved.source
    try:
        hashes = provenance.data_hashes(resolved.data_files)
    except safeio.BadFile as exc:
        raise exc.user_error(cfg.path) from None
    from pipeline.checks import compute as compute_plan

    # `pipeline.compute: fastest`: how the same training is computed, chosen for the card (None: as written)
    chosen, compute = compute_plan.apply(cfg, resolved.axolotl, resolved.settings)
    if compute is not None:
        manifest["compute"] = compute
    run = runs.create(runs_dir, cfg.name, stage)
    with runs.setting_up(run):
        weighting = section.loss_weighting(cfg)
        axolotl_cfg = prepare(chosen, run.output_dir, cache.cache_dir(), resolved.data_files, hashes, weighting)
        for cut in drop_incomplete_prepared(Path(axolotl_cfg["dataset_prepared_path"])):
            print(f"note: removed {cut}: prepared data an earlier run left cut short", file=sys.stderr)
        trusted = remote_code_origin(cfg, resolved.axolotl, axolotl_cfg)
        text = run_config_text(cfg.path, [f"Resolved by pipeline {stage} from {cfg.path}", *compute_plan.comment(compute)],
                               axolotl_cfg)
        runs.write_atomic(run.path / "config.yaml", text)
        runs.write_atomic(run.path / "source.yaml", cfg.text)
        runs.start_manifest(run, stage=stage, config_path=cfg.path.resolve(), config_sha256=cfg.sha256,
                            resolved_sha256=hashlib.sha256(text.encode()).hexdigest(),
                            data_files=resolved.data_files, data_hashes=hashes, offline=resolved.offline,
                            overrides=cfg.overrides, bounds=section.bounds(cfg), trust_remote_code=trusted,
                            loss_weighting=weighting, **manifest)
    return run


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
            args: list[str] | None = None) -> list[str]:
    """The axolotl command line for `train`, `merge_lora`, ... on one process or several GPUs.

    Several GPUs go through axolotl's own CLI and its torchrun launcher by default: torchrun needs no
    accelerate config file, and DDP, FSDP or DeepSpeed then follow from the YAML (`fsdp_config`,
    `deepspeed`), as they would for a user running `axolotl train --launcher torchrun` by hand.
    """
    args = list(args or [])
    if gpus <= 1:  # axolotl's CLI module, run by pipeline.in_axolotl.entry: the same entry, a faster exit
        return [sys.executable, "-m", ENTRY, f"axolotl.cli.{subcommand}", str(config), *args]
    cli = subcommand.replace("_", "-")
    launcher_args = ["--num_processes", str(gpus)] if launcher == "accelerate" else [f"--nproc_per_node={gpus}"]
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
            try:
                echo.write(chunk.decode("utf-8", "replace"))
                echo.flush()
            except (OSError, ValueError):
                pass
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
    print(f"warning: {log_path} can no longer be written (disk full?); axolotl's output goes to the terminal "
          f"only", file=sys.stderr)
    try:
        if log is not None:
            log.close()
    except OSError:
        pass
