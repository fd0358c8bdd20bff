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
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from pipeline.in_axolotl import ENTRY, LAUNCHED_ENV, METRICS_ENV, PLUGINS, PROFILE_ENV  # noqa: F401 - the contract, re-exported

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
    axolotl process compiles their sources again: 3,459 modules and 10 s of an 18 s startup on the lent
    H100 machine. There, bytecode is kept in $PIPELINE_CACHE/pycache (PYTHONPYCACHEPREFIX: a mirror
    tree, never a file beside the sources). Python then ignores the __pycache__ folders beside the
    sources, so the first run compiles everything once (about 7 s more there) and every later run reads
    it back (the 8B smoke: 35 s -> 21 s). That is why it is used only where one of BYTECODE_PROBES lacks
    its bytecode: in a pip-installed image (ours) every `docker run` would otherwise start by compiling
    what is already compiled. None as well when bytecode is written normally, when the user set a prefix
    of their own, or with PIPELINE_PYCACHE=0.
    """
    if os.environ.get(PYCACHE_ENV) == "0" or os.environ.get("PYTHONPYCACHEPREFIX"):
        return None
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") and not sys.dont_write_bytecode:
        return None
    if not _installed_without_bytecode(BYTECODE_PROBES):
        return None
    from pipeline.core.models import cache_dir

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
            data_files: list[Path] | None = None) -> dict[str, Any]:
    """The config axolotl runs: output into the run folder, the recorder plugin, a shared dataset cache.

    Small data gets `dataset_num_proc: 1` unless the config sets it. Axolotl defaults to one process per
    core, and its multipack sampler then packs in a fresh pool of up to 4 forked workers each time it
    counts batches (5-6 times before the first step), each worker compiling the numba packer anew: on a
    16-core H100 host that was seconds of a 36-row smoke. The bins do not depend on the process count
    (packing groups are 100,000 rows), so what is trained is unchanged. Measured on that host with 1,500
    rows of 300-3,000 tokens (10 MB): the whole data phase took 11 s in one process, tokenising included,
    and 13-14 s in 16 with the data already tokenised. Past 32 MiB, parallel tokenisation keeps its place.
    """
    cfg = dict(axolotl_cfg)
    for key, value in RUN_DEFAULTS.items():
        cfg.setdefault(key, value)
    if data_files and "dataset_num_proc" not in cfg and "dataset_processes" not in cfg:
        size = sum(p.stat().st_size for p in data_files if p.is_file())
        if size <= SMALL_DATA_BYTES:
            cfg["dataset_num_proc"] = 1
    cfg["output_dir"] = str(output_dir)
    # axolotl's default prepared-dataset folder is ./last_run_prepared in the user's directory; a
    # shared cache keyed by axolotl's own config+data hash lets a second smoke skip tokenisation
    cfg.setdefault("dataset_prepared_path", str(cache / "prepared"))
    plugins = list(cfg.get("plugins") or [])
    plugins += [p for p in PLUGINS if p not in plugins]
    cfg["plugins"] = plugins
    return cfg


def start_run(stage: str, resolved: Any, runs_dir: Path, **manifest: Any) -> Any:
    """A new run folder for `stage`, set up the one way every stage does it: the config axolotl will run
    (config.yaml, see `prepare`), the user's config as written (source.yaml) and the manifest, with the
    `--set` overrides and the bounds the run was started with. `resolved` is a config.ResolvedConfig."""
    import hashlib

    import yaml

    from pipeline.core import models, runs, section

    cfg = resolved.source
    run = runs.create(runs_dir, cfg.name, stage)
    axolotl_cfg = prepare(resolved.axolotl, run.output_dir, models.cache_dir(), resolved.data_files)
    text = f"# Resolved by pipeline {stage} from {cfg.path}\n" + yaml.safe_dump(axolotl_cfg, sort_keys=False)
    runs.write_atomic(run.path / "config.yaml", text)
    runs.write_atomic(run.path / "source.yaml", cfg.text)
    runs.start_manifest(run, stage=stage, config_path=cfg.path.resolve(), config_sha256=cfg.sha256,
                        resolved_sha256=hashlib.sha256(text.encode()).hexdigest(), data_files=resolved.data_files,
                        offline=resolved.offline, overrides=cfg.overrides, bounds=section.bounds(cfg), **manifest)
    return run


def environment(metrics_file: Path, offline: bool, extra: Mapping[str, str] | None = None, *,
                gpus: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    if gpus == 1 and "CUDA_VISIBLE_DEVICES" not in env:
        # a one-process run on a machine with several GPUs would otherwise be split across all of them by
        # axolotl's device_map="auto" (seen on 2 x H100: "Expected all tensors to be on the same device")
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
        cwd: Path | None = None) -> int:
    """Run a child, teeing its output to `echo` (the terminal) and `log_path`; forward SIGINT/SIGTERM.

    Returns the child's exit status; a child killed by a signal gives 128 + the signal number.
    """
    echo = echo if echo is not None else sys.stdout
    with log_path.open("ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        env = {**env, LAUNCHED_ENV: repr(time.time())}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)

        def forward(signum: int, _frame: Any) -> None:
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                pass

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
                log.write(chunk)
                log.flush()
                try:
                    echo.write(chunk.decode("utf-8", "replace"))
                    echo.flush()
                except (OSError, ValueError):
                    pass
            code = proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    return 128 - code if code < 0 else code
