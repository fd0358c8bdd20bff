"""Plugins are found as `import` finds them and read from source: nothing of them runs, parents included."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipeline.checks import plugins


def package(root: Path, body: str = "") -> Path:
    """A package `pkg.sub.plugin` whose every `__init__` raises if it is ever run."""
    for folder in (root / "pkg", root / "pkg" / "sub"):
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (root / "pkg" / "sub" / "plugin.py").write_text(body or (
        "import json\n"
        "from axolotl.integrations.base import BasePlugin\n"
        "class P(BasePlugin):\n"
        "    def get_input_args(self):\n"
        "        return 'pkg.sub.args.PArgs'\n"))
    (root / "pkg" / "sub" / "args.py").write_text(
        "from pydantic import BaseModel\n"
        "class Base(BaseModel):\n    p_base: int | None = None\n"
        "class PArgs(Base):\n    p_level: int | None = None\n")
    return root


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_locate_runs_no_parent(on_path: Path) -> None:
    package(on_path)
    assert plugins.locate("pkg.sub.plugin") == on_path / "pkg" / "sub" / "plugin.py"
    assert "pkg" not in sys.modules
    with pytest.raises(RuntimeError):  # the control: find_spec imports the parents, which raise
        import importlib.util

        importlib.util.find_spec("pkg.sub.plugin")


def test_a_plugin_outside_axolotl_is_read_not_run(on_path: Path) -> None:
    package(on_path)
    p = plugins.read("pkg.sub.plugin.P")
    assert not p.own and not p.missing and "pkg" not in sys.modules
    assert [f.relative_to(on_path).as_posix() for f in p.files] == [
        "pkg/__init__.py", "pkg/sub/__init__.py", "pkg/sub/plugin.py"]
    assert p.args is not None and {"p_level", "p_base"} <= set(p.args.model_fields)


def test_a_package_the_plugin_imports_that_is_not_installed(on_path: Path) -> None:
    package(on_path, "import not_installed_anywhere\nclass P:\n    pass\n")
    p = plugins.read("pkg.sub.plugin.P")
    assert p.missing and "not_installed_anywhere" in p.missing[0] and "plugin.py:1" in p.missing[0]


def test_axolotls_own_plugin_is_found_under_its_short_name() -> None:
    p = plugins.read("liger.LigerPlugin")  # axolotl's load_plugin tries axolotl.integrations.<name>
    assert p.own and p.args is not None and "liger_fused_linear_cross_entropy" in p.args.model_fields
    assert not [m for m in sys.modules if m.startswith("axolotl.integrations.liger")]


def test_a_misspelt_plugin() -> None:
    with pytest.raises(ImportError, match="no module named"):
        plugins.read("axolotl.integrations.lgier.LigerPlugin")
