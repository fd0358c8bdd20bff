"""The config's `plugins:`, read from their source as axolotl's `load_plugin` would find them.

A plugin adds its own input arguments to axolotl's schema; the checks need that schema to know the
plugin's keys. Importing a plugin pulls in peft, datasets and axolotl's trainer stack (seconds), so a
plugin is read, not imported: its module must exist and define the class, and the constant string its
`get_input_args` returns names the arguments model, which is loaded from its own file.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.checks.context import quiet
from pipeline.core.config import LoadedConfig
from pipeline.core.errors import Finding


def plugin_schemas(loaded: LoadedConfig, cfg: Mapping[str, Any]) -> tuple[list[type], list[Finding]]:
    """The config's plugins, found as axolotl's `load_plugin` finds them, and the input-argument models
    they add to the schema. A plugin is read, not imported: importing one pulls in peft, datasets and
    axolotl's trainer stack (seconds); its module must exist and define the class, and the constant
    string its `get_input_args` returns names the arguments model, which is loaded from its own file.
    A plugin whose arguments cannot be read that way is imported for real."""
    mixins: list[type] = []
    found: list[Finding] = []
    plugins = cfg.get("plugins") or []
    if not plugins or not isinstance(plugins, list):
        return mixins, found
    for i, name in enumerate(plugins):
        try:
            if (args := _plugin_args(str(name))) is not None:
                mixins.append(args)
        except Exception as exc:  # noqa: BLE001 - axolotl would log it and train on without the plugin
            found.append(Finding(str(loaded.path), loaded.line("plugins", i), "plugin-import",
                                 f"plugin {name!r} does not load ({exc}); axolotl would log this and train without "
                                 f"it: fix the name or install its package"))
    return mixins, found



def _plugin_args(name: str) -> type | None:
    import importlib

    module, _, cls = name.rpartition(".")
    if not module:
        raise ImportError(f"{name!r} is not module.ClassName")
    source = _module_file(module) or _module_file(f"axolotl.integrations.{module}")
    if source is None:
        raise ImportError(f"no module named {module!r}")
    node = _find_class(source, cls)
    if node is None:
        raise ImportError(f"module {module!r} defines no class {cls!r}")
    ref = _returned_constant(node, "get_input_args")
    if ref is None and any(isinstance(n, ast.FunctionDef) and n.name == "get_input_args" for n in node.body):
        from axolotl.integrations.base import load_plugin  # dynamic: import the plugin as axolotl does

        with quiet():
            ref = load_plugin(name).get_input_args()
    if not ref:
        return None
    args_module, _, args_cls = str(ref).rpartition(".")
    args_source = _module_file(args_module)
    args_node_file = _class_file(args_source, args_cls) if args_source else None
    if args_node_file is not None:
        spec = importlib.util.spec_from_file_location(f"_pipeline_plugin_args_{args_cls}", args_node_file)
        if spec is not None and spec.loader is not None:
            mod = importlib.util.module_from_spec(spec)
            try:
                with quiet():
                    spec.loader.exec_module(mod)
                return getattr(mod, args_cls)
            except Exception:  # noqa: BLE001 - e.g. relative imports: fall back to the real import
                pass
    with quiet():
        return getattr(importlib.import_module(args_module), args_cls)



def _module_file(module: str) -> Path | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None



def _class_file(source: Path, cls: str, depth: int = 0) -> Path | None:
    """The file that defines `cls`, following `from .x import cls` re-exports."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for n in tree.body:
        if isinstance(n, ast.ClassDef) and n.name == cls:
            return source
    for n in tree.body:
        if isinstance(n, ast.ImportFrom) and any(a.name == cls and a.asname in (None, cls) for a in n.names) \
                and depth < 3:
            if n.level:
                base = source.parent
                for _ in range(n.level - 1):
                    base = base.parent
                target = base / Path(*(n.module or "").split("."))
                candidates = [target.with_suffix(".py"), target / "__init__.py"]
                nxt = next((c for c in candidates if c.is_file()), None)
            else:
                nxt = _module_file(n.module or "")
            if nxt is not None:
                return _class_file(nxt, cls, depth + 1)
    return None



def _find_class(source: Path, cls: str) -> ast.ClassDef | None:
    where = _class_file(source, cls)
    if where is None:
        return None
    tree = ast.parse(where.read_text(encoding="utf-8"))
    return next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)



def _returned_constant(node: ast.ClassDef, method: str) -> str | None:
    for fn in node.body:
        if isinstance(fn, ast.FunctionDef) and fn.name == method:
            returns = [r for r in ast.walk(fn) if isinstance(r, ast.Return)]
            if len(returns) == 1 and isinstance(returns[0].value, ast.Constant) and \
                    isinstance(returns[0].value.value, str):
                return returns[0].value.value
    return None
