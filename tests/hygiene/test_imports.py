"""The package's shape: no import circles, no two parts importing each other, no module too long to read,
stages that never import each other, and one module that asks the machine about its GPUs.

The import graph is read from the source with `ast` (nothing is imported), with every import a module
holds, at its top and inside its functions alike: a lazy import still makes the two modules depend on
each other, it only hides the circle from Python. An import under `if TYPE_CHECKING:` counts too. A
package's `__init__` is a node of its own: `from pipeline.checks import data` depends on
`pipeline.checks.data`, and on `pipeline.checks` only for a name that is not a submodule (Python runs
the parents' `__init__` first, but that is every submodule's edge and says nothing about the design).

A *part* is a subpackage of `pipeline` (`commands`, `stages`, `checks`, `core`, `in_axolotl`) or one of its
top-level modules (`cli`); parts form layers that only point down (docs/architecture.md).

The stages are the modules a user's command runs, in `pipeline/stages/`: `check`, `smoke`, `train`,
`merge`, `evaluate`, `runs`; shared code goes down into `core/` or `checks/`, never sideways.
`stages/report.py` and `stages/scoring.py` are not stages: they are evaluate's helpers (how an evaluation
is shown, how a generation is scored as text), and only evaluate imports them; `stages/progress.py` is train's
(its progress lines), and only train imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support import ROOT

PACKAGE = ROOT / "pipeline"
#: longer than this and a module holds more than one subject; split it
MAX_LINES = 400
#: modules over MAX_LINES for now, each with the issue that brings it under (remove the entry when it lands)
KNOWN_LONG = {
}
#: the parts, top layer first: a part imports only parts below it
LAYERS = ("cli", "commands", "stages", "checks", "in_axolotl", "core")
#: the one module that asks the machine about its GPUs (NVML, torch.cuda, nvidia-smi)
GPU_PROBE = "pipeline.core.gpus"
STAGES = ("stages.check", "stages.smoke", "stages.train", "stages.merge", "stages.evaluate", "stages.runs")
#: helpers a stage may import that sit beside the stages, with the one stage that uses each
STAGE_HELPERS = {"stages.report": "stages.evaluate", "stages.scoring": "stages.evaluate", "stages.progress": "stages.train"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__.py)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules this module imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package, one level up per extra dot
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                if f"{source}.{alias.name}" in known:  # a submodule
                    out.add(f"{source}.{alias.name}")
                elif source in known:  # a name defined in the module (or the package's __init__)
                    out.add(source)
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_imports_it_should():
    """A guard on the reader itself: known edges, top-level and lazy, absolute and from a package."""
    g = graph()
    assert "pipeline.checks.dataset" in g["pipeline.checks.lengths"]  # top-level
    assert "pipeline.core.models" in g["pipeline.checks.lengths"]  # inside a function
    assert "pipeline.stages.report" in g["pipeline.stages.evaluate"]  # `from pipeline.stages import report`
    assert "pipeline.checks" in g["pipeline.stages.smoke"]  # a package's __init__


def test_no_import_circles():
    found = cycles(graph())
    assert not found, "modules that import each other (directly or around a circle): " + "; ".join(
        " <-> ".join(c) for c in found)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_is_longer_than_the_limit(name):
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    if name in KNOWN_LONG and lines > MAX_LINES:
        pytest.xfail(f"{lines} lines: {KNOWN_LONG[name]}")
    assert lines <= MAX_LINES, f"{modules()[name]} has {lines} lines (at most {MAX_LINES}): split it by subject"


def part(module: str) -> str:
    """`pipeline.core.engine` -> `core`; `pipeline.cli` -> `cli`; `pipeline` (its __init__) -> `pipeline`."""
    names = module.split(".")
    return names[1] if len(names) > 1 else names[0]


def part_edges(edges: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """Every import from one part into another, with the modules that make it."""
    out: dict[tuple[str, str], list[str]] = {}
    for module, deps in edges.items():
        for dep in deps:
            if part(module) != part(dep):
                out.setdefault((part(module), part(dep)), []).append(f"{module} -> {dep}")
    return out


def test_no_two_parts_import_each_other():
    found = part_edges(graph())
    mutual = sorted({tuple(sorted(pair)) for pair in found if pair[::-1] in found})
    assert not mutual, "parts that import each other (move the shared code down into the lower one): " + "; ".join(
        f"{a} <-> {b} ({found[(a, b)][0]}, {found[(b, a)][0]})" for a, b in mutual)


def test_the_layers_point_down():
    """Each part imports only parts below it in LAYERS (the package's own __init__ and __main__ aside)."""
    found = part_edges(graph())
    assert set(LAYERS) <= {part(m) for m in modules()}, "a layer named here is no longer a part of the package"
    wrong = [f"{a} -> {b}: {via[0]}" for (a, b), via in sorted(found.items())
             if a in LAYERS and b in LAYERS and LAYERS.index(b) <= LAYERS.index(a)]
    assert not wrong, "imports that point up or sideways between layers: " + "; ".join(wrong)


#: how a module would ask the machine which GPUs it has. `torch.cuda.is_available()` where torch is loaded
#: already, to place tensors in this process (inference, a model build), is a use of the device, not a probe
GPU_WORDS = ("pynvml", "nvidia-smi", "libnvidia-ml", "torch.cuda.device_count", "torch.cuda.get_device")


def test_one_module_probes_the_gpus():
    """NVML, nvidia-smi and torch.cuda's device questions are asked in core/gpus.py alone; in_axolotl (inside
    axolotl's process, where torch is loaded and the devices are the trainer's) measures, and is left out.
    The words are looked for in the source, so a probe written anywhere else fails this test."""
    probing = sorted(name for name, path in modules().items()
                     if not name.startswith("pipeline.in_axolotl")
                     and any(w in path.read_text(encoding="utf-8") for w in GPU_WORDS))
    assert probing == [GPU_PROBE], f"modules that ask the machine about its GPUs themselves: {probing}"


def test_stages_never_import_each_other():
    g = graph()
    stages = {f"pipeline.{s}" for s in STAGES}
    assert stages <= set(g), sorted(stages - set(g))
    wrong = {s: sorted(g[s] & stages) for s in sorted(stages) if g[s] & stages}
    assert not wrong, f"stages that import another stage (move the shared code into core/ or checks/): {wrong}"


def test_a_stage_helper_serves_its_one_stage():
    g = graph()
    for helper, owner in STAGE_HELPERS.items():
        users = sorted(m for m, deps in g.items() if f"pipeline.{helper}" in deps)
        assert users == [f"pipeline.{owner}"], f"pipeline.{helper} is imported by {users}, not by {owner} alone"
        assert not g[f"pipeline.{helper}"] & {f"pipeline.{s}" for s in STAGES}, f"{helper} imports a stage"
