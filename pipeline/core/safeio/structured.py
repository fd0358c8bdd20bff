"""JSON and YAML from files a user or a run folder hands us: parsed with bounds on depth, size and aliases.

YAML is composed into nodes first and its size counted with aliases expanded (a node reached through
`*alias` counts each time it is reached), before anything walks it: a 342-byte "billion laughs" bomb is a
few dozen nodes on disk and hundreds of millions once expanded. Recursive aliases are refused too.
JSON refuses NaN, nesting deeper than Python can read and lone surrogate escapes.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from typing import Any

import yaml

from pipeline.core.safeio.files import MAX_RECORD_BYTES, BadFile, read_text

#: values of a config once aliases are expanded (a shipped config has about 100)
MAX_YAML_NODES = 200_000

# --- JSON ---------------------------------------------------------------------------------------------------

def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (write a number, or null)")


#: a JSON escape of a UTF-16 surrogate: a pair is one character, a lone one is none
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def json_loads(text: str | bytes) -> Any:
    """json.loads for what a file holds, refusing with a ValueError (as for any JSON that is not valid):
    - NaN and Infinity, which Python's json accepts and no other reader does;
    - a document nested deeper than Python can read (its json recurses once per level);
    - a lone surrogate escape (`"\\ud800"`): no UTF-8 text can hold it, so a tokenizer, a file or a
      terminal handed the string fails (RFC 8259 section 8.2 calls such strings not interoperable).
    """
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested deeper than Python can read; flatten it") from None
    found = _SURROGATE_ESCAPE.search(text) if isinstance(text, str) else _SURROGATE_ESCAPE_BYTES.search(text)
    if found and (lone := lone_surrogate(value)) is not None:
        raise ValueError(f"a lone surrogate escape (\\u{ord(lone):04x}) that is no character; remove it, or write "
                         f"the pair it belongs to")
    return value


def lone_surrogate(value: Any) -> str | None:
    """The first unpaired surrogate in any string (key or value) of a loaded document, else None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return item[exc.start]
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
    return None


def read_json(path: str | os.PathLike[str], what: str = "file", max_bytes: int = MAX_RECORD_BYTES, *,
              follow: bool = True) -> Any:
    """A JSON document pipeline wrote itself (a manifest, a trainer state), read with a bound."""
    try:
        return json_loads(read_text(path, "record", max_bytes, what, follow=follow))
    except ValueError as exc:
        raise BadFile("record-corrupt", f"{what} is not valid JSON ({str(exc).split(':')[0]})") from None


# --- YAML ---------------------------------------------------------------------------------------------------

def load_yaml(text: str, max_nodes: int = MAX_YAML_NODES) -> tuple[yaml.Node | None, Any]:
    """(node tree, data) of one YAML document, refusing alias bombs and recursive aliases before any walk.

    yaml errors (syntax, `!!python/object` and other unsafe tags) propagate as yaml.YAMLError, and so do
    values PyYAML's constructors cannot build (`2024-13-01`, a 5,000-digit integer, `"\\U00110000"`), as a
    MarkedYAMLError at their line.
    """
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character: PyYAML's message spans two lines
        line = text.count("\n", 0, exc.position)
        raise yaml.MarkedYAMLError(problem=f"character #x{exc.character:x} is not allowed in YAML ({exc.reason})",
                                   problem_mark=yaml.Mark("<text>", exc.position, line, 0, "", 0)) from None
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise BadFile("yaml-too-deep", "the YAML nests deeper than Python can read; flatten it") from None
        except ValueError as exc:  # the scanner: an escape past Unicode ("\U00110000")
            raise yaml.MarkedYAMLError(problem=f"an escape that is no character ({exc})",
                                       problem_mark=loader.get_mark()) from None
        if node is None:
            return None, None
        expanded = _expanded_size(node, max_nodes)
        if expanded > max_nodes:
            raise BadFile("yaml-aliases", f"the YAML expands to more than {max_nodes:,} values through its aliases "
                                          f"(*name), a pattern of 'billion laughs' attacks; write the values out, "
                                          f"or reuse fewer", node.start_mark.line + 1)
        try:
            data = loader.construct_document(node)
        except UNBUILDABLE as exc:  # a date past the calendar, a 5,000-digit integer, `!!timestamp x`
            raise _unreadable(node, f"cannot be read ({str(exc)[:120]})") from None
        if _MAY_HOLD_SURROGATES.search(text) and lone_surrogate(data) is not None:
            raise _unreadable(node, "holds a surrogate escape, which is no character on its own (YAML does not pair "
                                    "\\u escapes); write the character itself")
        return node, data
    finally:
        loader.dispose()


#: what PyYAML's own constructors raise on a scalar they cannot build (besides its YAMLError)
UNBUILDABLE = (ValueError, OverflowError, AttributeError, TypeError, IndexError)
#: YAML escapes (\\u, \\U) and raw surrogates (a command line's undecodable bytes) that may make a lone one
_MAY_HOLD_SURROGATES = re.compile("\\\\[uU]|[\ud800-\udfff]")


def _unreadable(root: yaml.Node, why: str) -> yaml.MarkedYAMLError:
    """The error for the first scalar PyYAML cannot build, or builds into a lone surrogate, at its line."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            try:
                if lone_surrogate(yaml.constructor.SafeConstructor().construct_object(node)) is None:
                    continue
            except UNBUILDABLE:
                pass
            except yaml.YAMLError:
                continue
            return yaml.MarkedYAMLError(problem=f"the value {str(node.value)[:40]!r} {why}", problem_mark=node.start_mark)
        stack.extend(reversed([n for item in node.value for n in (item if isinstance(item, tuple) else (item,))]))
    return yaml.MarkedYAMLError(problem=f"a value {why}", problem_mark=root.start_mark)


def _expanded_size(root: yaml.Node, cap: int) -> int:
    """Values in the tree with every alias expanded, counted once per node (memoised), stopping past `cap`."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise BadFile("yaml-aliases", "the YAML has an alias inside the value it names (a cycle); write the "
                                          "value out", node.start_mark.line + 1)
        active.add(key)
        total = 1
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        for child in children:
            total += size(child)
            if total > cap:
                break
        active.discard(key)
        sizes[key] = min(total, cap + 1)
        return sizes[key]

    try:
        return size(root)
    except RecursionError:
        raise BadFile("yaml-too-deep", "the YAML nests deeper than Python can read; flatten it") from None


def find_nan(data: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], float]]:
    """Every NaN in a loaded config (YAML's `.nan`): no setting of axolotl's takes one."""
    if isinstance(data, float) and math.isnan(data):
        yield path, data
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from find_nan(v, (*path, str(k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from find_nan(v, (*path, i))
