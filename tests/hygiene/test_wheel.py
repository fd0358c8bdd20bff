"""The wheel carries every file of the package.

The container and every `pip install .` get the package from its wheel, not from the checkout; a data file
the package reads at import time (architectures/index.json) once shipped in git but not in the wheel, and
the container's CLI died on import while every test run from the checkout passed. This builds the wheel
from a copy of the tracked sources and compares its file list with git's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from support import ROOT


def tracked(prefix: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", "-z", prefix], cwd=ROOT, capture_output=True, check=True).stdout
    return {p for p in out.decode().split("\0") if p}


def test_the_wheel_holds_every_tracked_file_of_the_package(tmp_path):
    src = tmp_path / "src"
    for rel in tracked("pipeline") | {"pyproject.toml", "README.md"}:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n for n in zf.namelist() if n.startswith("pipeline/")}
    missing = sorted(tracked("pipeline") - shipped)
    assert not missing, f"tracked but not in the wheel (add them to [tool.setuptools.package-data]): {missing}"
