"""The config's `plugins:`, read from their source as axolotl's `load_plugin` would find them, never run.

A plugin adds its own input arguments to axolotl's schema; the checks need that schema to know the
plugin's keys. Nothing of a plugin is imported: `importlib.util.find_spec("pkg.mod")` would import `pkg`
(its `__init__` runs), and importing a plugin pulls in peft, datasets and axolotl's trainer stack
(seconds). So each module is found on `sys.path` the way `import` finds it, without executing anything:

- the module must exist and define the class (`plugin-import` otherwise), and every package its files
  import at the top must be installed (axolotl would log the ImportError and train on without the plugin);
- the constant string its `get_input_args` returns names the arguments model. A model of axolotl's own
  (`axolotl.integrations.*`, axolotl's code, whose schema the check imports anyway) is loaded from its
  own file, so its validators run; a plugin outside axolotl is never executed: its argument names are
  read from the class's annotations, and a `code-will-run` warning names the files axolotl would run.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.checks.context import quiet
from pipeline.core import safeio
from pipeline.core.config import LoadedConfig
from pipeline.core.errors import Finding

#: packages whose plugins are axolotl's own code
OWN_PACKAGES = ("axolotl",)


@dataclass
class Plugin:
    """What reading one plugin's source found."""

    name: str
    files: list[Path] = field(default_factory=list)  # what `import` would run, parents first
    args: type | None = None
    own: bool = False  # axolotl's own code
    args_read: bool = True  # False: it has arguments the check could not read
    missing: list[str] = field(default_factory=list)  # imports of packages that are not installed here


def plugin_schemas(loaded: LoadedConfig, cfg: Mapping[str, Any]) -> tuple[list[type], list[Finding]]:
    """The input-argument models the config's plugins add to axolotl's schema, and what is wrong with
    the plugins (or, for plugins outside axolotl, which files the run would execute)."""
    mixins: list[type] = []
    found: list[Finding] = []
    plugins = cfg.get("plugins") or []
    if not plugins or not isinstance(plugins, list):
        return mixins, found
    for i, name in enumerate(plugins):
        where = (str(loaded.path), loaded.line("plugins", i))
        try:
            plugin = read(str(name))
        except ImportError as exc:  # axolotl would log this and train on without the plugin
            found.append(Finding(*where, "plugin-import",
                                 f"plugin {name!r} does not load ({exc}); axolotl would log this and train without "
                                 f"it: fix the name or install its package"))
            continue
        if plugin.args is not None:  # its keys are known even where it cannot load: one finding, not two
            mixins.append(plugin.args)
        if plugin.missing:
            found.append(Finding(*where, "plugin-import",
                                 f"plugin {name!r} does not load here ({plugin.missing[0]}); axolotl would log this "
                                 f"and train without it: install that package"))
        if not plugin.own:
            unread = "" if plugin.args_read else "; its settings could not be read from source, so keys it adds " \
                                                 "may be reported as unknown"
            found.append(Finding(*where, "code-will-run",
                                 f"plugin {name!r} is code outside axolotl that the run imports and calls: "
                                 f"{', '.join(_shown(f) for f in plugin.files)}; read it before you run it (the check "
                                 f"read it and ran none of it){unread}", "warning"))
    return mixins, found


def read(name: str) -> Plugin:
    """Find a plugin as axolotl's `load_plugin` does (the module as named, else under
    `axolotl.integrations.`), check what its files import, and read its arguments model."""
    module, _, cls = name.rpartition(".")
    if not module:
        raise ImportError(f"{name!r} is not module.ClassName")
    if locate(module) is None and locate(f"axolotl.integrations.{module}") is not None:
        module = f"axolotl.integrations.{module}"
    chain = import_chain(module)
    if not chain:
        raise ImportError(f"no module named {module!r}")
    plugin = Plugin(name, own=module.split(".")[0] in OWN_PACKAGES and _inside_own(chain[-1]))
    node_file = _class_file(chain[-1], cls)
    if node_file is None:
        raise ImportError(f"module {module!r} defines no class {cls!r}")
    # what importing it runs, of its own package (for axolotl's plugins, axolotl/integrations/<name>/)
    top = chain[min(2, len(chain) - 1)] if plugin.own else chain[0]
    plugin.files = _files_run(chain, top.parent)
    plugin.missing = [f"{_shown(source)}:{line} imports {name!r}, which is not installed here"
                      for source, line, name in _missing_imports(plugin.files)]
    node = _class_in(node_file, cls)
    ref = _returned_constant(node, "get_input_args") if node is not None else None
    if ref is None:
        plugin.args_read = not any(isinstance(n, ast.FunctionDef) and n.name == "get_input_args"
                                   for n in (node.body if node is not None else []))
        return plugin
    plugin.args = _args_model(ref, own=plugin.own)
    plugin.args_read = plugin.args is not None
    return plugin


# --- finding files without importing -----------------------------------------------------------------

def locate(module: str) -> Path | None:
    """The source file of a module, found the way `import` finds it, without running anything: a
    top-level name is only searched for, and each submodule is looked up in its parent's folders."""
    top, *rest = module.split(".")
    if not top:
        return None
    try:
        spec = sys.modules[top].__spec__ if top in sys.modules else importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    for part in rest:
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(f"{spec.name}.{part}", list(spec.submodule_search_locations))
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def import_chain(module: str) -> list[Path]:
    """Every file `import module` runs for the module itself and its parents, parents first (a
    namespace package has none); empty if the module is not there."""
    parts = module.split(".")
    files = []
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        path = locate(name)
        if path is None and depth == len(parts):
            return []
        if path is not None:
            files.append(path)
    return files


def _inside_own(path: Path) -> bool:
    for top in OWN_PACKAGES:
        try:
            spec = sys.modules[top].__spec__ if top in sys.modules else importlib.util.find_spec(top)
        except (ImportError, ValueError):
            continue
        roots = [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
        if any(path.resolve().is_relative_to(r) for r in roots):
            return True
    return False


def _files_run(chain: list[Path], root: Path) -> list[Path]:
    """The files under `root` (the plugin's package) that importing the plugin's module runs: its
    parents' `__init__` files, the module, and the modules of the package they import in turn."""
    inside = [f for f in chain if f.resolve().is_relative_to(root.resolve())]
    seen: list[Path] = inside[:-1]
    todo = [chain[-1]]
    while todo and len(seen) < 50:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.append(path)
        todo += [p for p in _imported_files(path) if p not in seen and p.resolve().is_relative_to(root.resolve())]
    return seen


def _module_level_imports(path: Path) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports that run whenever the module does (not those inside try, if, or functions)."""
    try:
        tree = ast.parse(_source(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node


def _imported_files(path: Path) -> list[Path]:
    """Files of Python source that a module's top-level imports run."""
    out = []
    for node in _module_level_imports(path):
        if isinstance(node, ast.ImportFrom):
            if (target := _from_target(path, node)) is not None:
                out.append(target)
            if node.level and not node.module:  # from . import a, b: submodules
                out += [f for a in node.names if (f := path.parent / f"{a.name}.py").is_file()]
        else:
            out += [p for a in node.names if (p := locate(a.name)) is not None]
    return out


def _missing_imports(files: list[Path]) -> Iterator[tuple[Path, int, str]]:
    """(file, line, package) for every package a file imports at module level that is not installed."""
    for path in files:
        for node in _module_level_imports(path):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for top in {n.split(".")[0] for n in names} - {""}:
                if not _installed(top):
                    yield path, node.lineno, top


def _installed(top: str) -> bool:
    """Whether a top-level module can be imported here (searched for, not imported)."""
    if top in sys.modules or top in sys.builtin_module_names:
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _source(path: Path) -> str:
    """A Python source file's text through the bounded reader; one that is not a regular UTF-8 file of at
    most 16 MiB (a FIFO, a device) reads as empty: it defines nothing the check could find."""
    try:
        return safeio.read_text(path, "plugin", 16 * safeio.MiB, what=path.name)
    except safeio.BadFile:
        return ""


# --- reading classes from source ---------------------------------------------------------------------

def _class_file(source: Path, cls: str, depth: int = 0) -> Path | None:
    """The file that defines `cls`, following `from .x import cls` re-exports."""
    tree = ast.parse(_source(source))
    for n in tree.body:
        if isinstance(n, ast.ClassDef) and n.name == cls:
            return source
    for n in tree.body:
        if isinstance(n, ast.ImportFrom) and any(a.name == cls and a.asname in (None, cls) for a in n.names) \
                and depth < 3:
            nxt = _from_target(source, n)
            if nxt is not None:
                return _class_file(nxt, cls, depth + 1)
    return None


def _from_target(source: Path, n: ast.ImportFrom) -> Path | None:
    """The file a `from X import ...` statement in `source` reads."""
    if n.level:
        base = source.parent
        for _ in range(n.level - 1):
            base = base.parent
        target = base / Path(*(n.module or "").split("."))
        return next((c for c in (target.with_suffix(".py"), target / "__init__.py") if c.is_file()), None)
    return locate(n.module or "")


def _class_in(source: Path, cls: str) -> ast.ClassDef | None:
    where = _class_file(source, cls)
    if where is None:
        return None
    tree = ast.parse(_source(where))
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)


def _returned_constant(node: ast.ClassDef, method: str) -> str | None:
    for fn in node.body:
        if isinstance(fn, ast.FunctionDef) and fn.name == method:
            returns = [r for r in ast.walk(fn) if isinstance(r, ast.Return)]
            if len(returns) == 1 and isinstance(returns[0].value, ast.Constant) and \
                    isinstance(returns[0].value.value, str):
                return returns[0].value.value
    return None


def _args_model(ref: str, *, own: bool) -> type | None:
    """The arguments model a plugin names: axolotl's own loaded from its file (its validators run), any
    other read from the class's annotations (its names only, values unchecked)."""
    args_module, _, args_cls = ref.rpartition(".")
    source = locate(args_module)
    where = _class_file(source, args_cls) if source is not None else None
    if where is None:
        return None
    if own:
        loaded = _load_file(where, args_cls)
        if loaded is not None:
            return loaded
    names = _annotated_names(where, args_cls)
    if names is None:
        return None
    from pydantic import create_model

    return create_model(f"{args_cls}FromSource", **{n: (Any, None) for n in names})  # type: ignore[call-overload]


def _load_file(path: Path, cls: str) -> type | None:
    """One file of axolotl's own, run as a module of its own (its package's `__init__` is not run)."""
    name = f"_pipeline_plugin_args_{cls}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # pydantic resolves postponed annotations through sys.modules
    try:
        with quiet():
            spec.loader.exec_module(mod)
        return getattr(mod, cls)
    except Exception:  # noqa: BLE001 - e.g. a relative import: read its names from source instead
        del sys.modules[name]
        return None


def _annotated_names(path: Path, cls: str, depth: int = 0) -> set[str] | None:
    """The field names a pydantic class declares (annotated assignments), with those of its bases that
    can be found in source; None where the class is not found."""
    node = _class_in(path, cls)
    if node is None:
        return None
    names = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    if depth >= 3:
        return names
    tree = ast.parse(_source(path))
    for base in node.bases:
        if not isinstance(base, ast.Name) or base.id == "BaseModel":
            continue
        if any(isinstance(n, ast.ClassDef) and n.name == base.id for n in tree.body):
            names |= _annotated_names(path, base.id, depth + 1) or set()
            continue
        for imp in tree.body:
            if isinstance(imp, ast.ImportFrom) and any(a.name == base.id for a in imp.names) \
                    and (src := _from_target(path, imp)) is not None:
                names |= _annotated_names(src, base.id, depth + 1) or set()
    return names
