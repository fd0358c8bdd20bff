"""Every module path and dotted module name the docs give exists, so a reader following them lands somewhere.

Paths (`pipeline/core/engine.py`, `tests/unit/test_cli.py`, `benchmarks/results/check-time-*.json`) are
looked up in the repository (a `*` as a glob); dotted names under a part of the package
(`pipeline.core.engine`, `pipeline.core.bytecode.bytecode_cache`) must name a module, or a module and a
name it defines at its top level. `pipeline.compute` and the like are keys of a config's `pipeline:`
section, not modules, and are not looked at.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from support import ROOT

#: what a reader is sent to (the research record, docs/research/, is kept as it was written, and left out)
DOCS = sorted(p for p in (ROOT / "docs").rglob("*.md") if "research" not in p.relative_to(ROOT / "docs").parts) + [
    ROOT / "README.md", ROOT / "benchmarks" / "README.md", ROOT / "models.lock"]
PATH = re.compile(r"(?<![\w./-])((?:pipeline|tests|benchmarks|tools|docs|configs|data|docker)/[\w./*-]*[\w*])")
PARTS = ("core", "checks", "stages", "commands", "in_axolotl")
DOTTED = re.compile(rf"(?<![\w./-])pipeline\.(?:{'|'.join(PARTS)})(?:\.\w+)+")


def mentions(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    """(where, what) for every match in the docs: where is `file:line`."""
    return [(f"{doc.relative_to(ROOT)}:{i}", m.group(0) if pattern is DOTTED else m.group(1))
            for doc in DOCS for i, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
            for m in pattern.finditer(line)]


def defined(module: Path) -> set[str]:
    """Names a module defines at its top level (functions, classes, assignments, imports)."""
    out: set[str] = set()
    for node in ast.parse(module.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return out


def resolves(dotted: str) -> bool:
    """A module (file or package), or a module and one top-level name in it."""
    names = dotted.split(".")
    for cut in range(len(names), 1, -1):
        base = ROOT.joinpath(*names[:cut])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            rest = names[cut:]
            return not rest or (len(rest) == 1 and rest[0] in defined(module)) or (
                len(rest) == 2 and rest[0] in defined(module))  # a class's attribute: the class is enough
    return False


def test_the_docs_find_the_files_they_name():
    missing = [f"{where}: {path}" for where, path in mentions(PATH)
               if not (list(ROOT.glob(path)) if "*" in path else (ROOT / path).exists())]
    assert not missing, "the docs name files that do not exist (moved? renamed?):\n" + "\n".join(missing)


def test_the_docs_find_the_modules_they_name():
    missing = [f"{where}: {name}" for where, name in mentions(DOTTED) if not resolves(name)]
    assert not missing, "the docs name modules that do not exist (moved? renamed?):\n" + "\n".join(missing)


def test_the_check_sees_a_wrong_name():
    """A guard on the test itself: a moved module and a missing file are caught."""
    assert resolves("pipeline.core.engine") and resolves("pipeline.core.bytecode.bytecode_cache")
    assert not resolves("pipeline.core.no_such_module") and not resolves("pipeline.core.engine.no_such_name")
    assert [m.group(1) for m in PATH.finditer("see `pipeline/nowhere.py` and tests/unit/test_cli.py.")] == [
        "pipeline/nowhere.py", "tests/unit/test_cli.py"]
