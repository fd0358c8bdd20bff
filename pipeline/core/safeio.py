"""Reading what a user hands us, bounded: configs, datasets and the files a run folder holds.

Every file a command reads on a user's word must be a regular file of bounded size. It is checked with
`os.stat` before it is opened (a FIFO, a device such as /dev/zero behind a symlink, a socket or a
directory is refused with one line, never opened), opened with O_NONBLOCK (a file swapped for a FIFO
between the check and the open still cannot block) and checked again on the open descriptor, then read
as a stream: line by line with a cap on each line, or whole with a cap on the file. Text must be UTF-8.

YAML is composed into nodes first and its size counted with aliases expanded (a node reached through
`*alias` counts each time it is reached), before anything walks it: a 342-byte "billion laughs" bomb is a
few dozen nodes on disk and hundreds of millions once expanded. Recursive aliases are refused too.

Problems raise `BadFile`, which the caller turns into a `Finding` at the place the user can fix: the
config line that names a dataset, or the line of the data file itself.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from pipeline.core.errors import Finding, UserError

MiB = 2**20
#: a config is a few kilobytes; a chat template inline is still far below this
MAX_CONFIG_BYTES = 1 * MiB
#: values of a config once aliases are expanded (a shipped config has about 100)
MAX_YAML_NODES = 200_000
#: datasets: the whole file, and one line of it (a row of 128k tokens is about 0.5 MiB of text)
DATA_BYTES_ENV, DEFAULT_DATA_BYTES = "PIPELINE_MAX_DATA_BYTES", 4 * 2**30
LINE_BYTES_ENV, DEFAULT_LINE_BYTES = "PIPELINE_MAX_LINE_BYTES", 4 * MiB
#: files pipeline wrote itself (manifests, trainer state): never this large unless damaged
MAX_RECORD_BYTES = 64 * MiB
CHUNK = MiB


class BadFile(Exception):
    """A file that cannot be read safely: `rule` and `message` as a Finding has them, `line` if known."""

    def __init__(self, rule: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.rule, self.message, self.line = rule, message, line

    def finding(self, path: str | os.PathLike[str], line: int | None = None) -> Finding:
        return Finding(str(path), self.line or line, self.rule, self.message)

    def user_error(self, path: str | os.PathLike[str], line: int | None = None) -> UserError:
        return UserError(self.finding(path, line))


def limit(env: str, default: int) -> int:
    """A byte limit the user may raise through `env`."""
    raw = os.environ.get(env)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError.at(f"${env}", None, "env-value", f"{raw!r} is not a number of bytes; set e.g. "
                                                         f"{env}={default}") from None
    if value < 1:
        raise UserError.at(f"${env}", None, "env-value", f"{value} must be at least 1 byte")
    return value


def data_bytes() -> int:
    return limit(DATA_BYTES_ENV, DEFAULT_DATA_BYTES)


def line_bytes() -> int:
    return limit(LINE_BYTES_ENV, DEFAULT_LINE_BYTES)


def human(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} bytes"


# --- what a path is ----------------------------------------------------------------------------------------

def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _is_not(path: Path, mode: int) -> str:
    """`is a named pipe`, or `links to /dev/zero, a character device` for a symlink."""
    try:
        if path.is_symlink():
            return f"links to {os.path.realpath(path)}, {_kind(mode)}"
    except OSError:
        pass
    return f"is {_kind(mode)}"


def present(path: str | os.PathLike[str], kind: str = "any") -> bool:
    """Whether a path a user wrote names something (`kind` "any", "file" or "dir"). A name too long for the
    file system, one with a NUL byte or behind a folder that cannot be searched is absent (Path.exists raises)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return kind == "any" or (stat.S_ISREG(mode) if kind == "file" else stat.S_ISDIR(mode))


def check_regular(path: str | os.PathLike[str], rule: str, max_bytes: int, what: str = "file") -> os.stat_result:
    """The file's stat, after refusing anything but a regular file of at most `max_bytes` (never opened)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise BadFile(f"{rule}-missing", f"{what} not found; check the path") from None
    except OSError as exc:
        raise BadFile(f"{rule}-unreadable", f"{what} cannot be read ({exc.strerror}); check its permissions") from None
    _judge(p, st, rule, max_bytes, what)
    return st


def _judge(p: Path, st: os.stat_result, rule: str, max_bytes: int, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        fix = "name a .yaml file in it" if stat.S_ISDIR(st.st_mode) and rule == "config" else "point it at a regular file"
        raise BadFile(f"{rule}-not-file", f"{what} {_is_not(p, st.st_mode)}, not a regular file; {fix}")
    if st.st_size > max_bytes:
        raise BadFile(f"{rule}-too-large", f"{what} is {human(st.st_size)}, over the limit of {human(max_bytes)}; "
                                           f"{_raise_hint(rule)}")


def _raise_hint(rule: str) -> str:
    if rule == "data":
        return f"split it, or raise ${DATA_BYTES_ENV}"
    if rule == "config":
        return "a config is a few kilobytes: is this the right file?"
    return "the file is damaged or not the one expected"


def open_regular(path: str | os.PathLike[str], rule: str, max_bytes: int, what: str = "file") -> IO[bytes]:
    """A binary stream on a regular file, checked before and after opening (no open can block)."""
    p = Path(path)
    check_regular(p, rule, max_bytes, what)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise BadFile(f"{rule}-unreadable", f"{what} cannot be opened ({exc.strerror})") from None
    try:
        _judge(p, os.fstat(fd), rule, max_bytes, what)  # it may have been swapped since the stat above
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


# --- reading ------------------------------------------------------------------------------------------------

def _not_utf8(data: bytes, exc: UnicodeDecodeError, first_line: int, what: str, rule: str) -> BadFile:
    line = first_line + data.count(b"\n", 0, exc.start)
    byte = data[exc.start]
    return BadFile(f"{rule}-encoding", f"{what} is not UTF-8 text (byte 0x{byte:02x} at line {line}); "
                                       f"save it as UTF-8", line)


def read_bytes(path: str | os.PathLike[str], rule: str, max_bytes: int, what: str = "file") -> bytes:
    """The whole file, at most `max_bytes` however it grows while it is read."""
    with open_regular(path, rule, max_bytes, what) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BadFile(f"{rule}-too-large", f"{what} grew past {human(max_bytes)} while it was read; "
                                           f"{_raise_hint(rule)}")
    return data


def read_text(path: str | os.PathLike[str], rule: str, max_bytes: int, what: str = "file") -> str:
    """The whole file as UTF-8 text (a leading byte-order mark dropped); binary or other encodings refused."""
    data = read_bytes(path, rule, max_bytes, what)
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise BadFile(f"{rule}-encoding", f"{what} holds NUL bytes (line {line}): it is binary, not text; "
                                          f"name a text file", line)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(data, exc, 1, what, rule) from None


def lines(path: str | os.PathLike[str], rule: str, *, max_bytes: int, max_line: int,
          what: str = "file") -> Iterator[tuple[int, str]]:
    """(line number, text) for every line, streamed: no line longer than `max_line` bytes is ever held."""
    total = 0
    decoder = codecs.getincrementaldecoder("utf-8")  # per line: strict, so a bad byte names its line
    with open_regular(path, rule, max_bytes, what) as fh:
        n = 0
        while raw := fh.readline(max_line + 1):
            n += 1
            total += len(raw)
            if total > max_bytes:
                raise BadFile(f"{rule}-too-large", f"{what} grew past {human(max_bytes)} while it was read; "
                                                   f"{_raise_hint(rule)}", n)
            if len(raw) > max_line:
                raise BadFile(f"{rule}-line-too-long",
                              f"line {n} is longer than {human(max_line)}; no row needs that many (a 128k-token "
                              f"row is about 0.5 MiB): split or shorten it, or raise ${LINE_BYTES_ENV}", n)
            if b"\x00" in raw:
                raise BadFile(f"{rule}-encoding", f"{what} holds NUL bytes (line {n}): it is binary, not text; "
                                                  f"name a text file", n)
            try:
                text = decoder().decode(raw[3:] if n == 1 and raw.startswith(codecs.BOM_UTF8) else raw, final=True)
            except UnicodeDecodeError as exc:
                raise _not_utf8(raw, exc, n, what, rule) from None
            yield n, text


def sha256(path: str | os.PathLike[str], rule: str = "data", max_bytes: int | None = None,
           what: str = "file") -> str:
    """The file's sha256, streamed; it must be a regular file (a FIFO or /dev/zero is refused, not read)."""
    h = hashlib.sha256()
    limit_ = max_bytes if max_bytes is not None else data_bytes()
    read = 0
    with open_regular(path, rule, limit_, what) as fh:
        while chunk := fh.read(CHUNK):
            read += len(chunk)
            if read > limit_:
                raise BadFile(f"{rule}-too-large", f"{what} grew past {human(limit_)} while it was hashed")
            h.update(chunk)
    return h.hexdigest()


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


def read_json(path: str | os.PathLike[str], what: str = "file", max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """A JSON document pipeline wrote itself (a manifest, a trainer state), read with a bound."""
    try:
        return json_loads(read_text(path, "record", max_bytes, what))
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


# --- model files --------------------------------------------------------------------------------------------

def safetensors_problem(path: str | os.PathLike[str]) -> str | None:
    """What is wrong with a .safetensors file (truncated, not safetensors), or None when it is whole.

    The format is an 8-byte header length, a JSON header naming every tensor's byte range, then the data:
    a file cut short by a full disk or a killed copy ends before the last range does.
    """
    p = Path(path)
    try:
        st = check_regular(p, "model", 2**50, what=p.name)
        with open_regular(p, "model", 2**50, what=p.name) as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{p.name} is {st.st_size} bytes, too short to be a safetensors file"
            n = int.from_bytes(head, "little")
            if n > min(st.st_size - 8, 100 * MiB):
                return f"{p.name} has a header length of {n} bytes in a {st.st_size}-byte file: truncated or not safetensors"
            header = json_loads(fh.read(n))
    except BadFile as exc:
        return exc.message
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"{p.name} has no readable safetensors header ({type(exc).__name__})"
    if not isinstance(header, dict):
        return f"{p.name} has no readable safetensors header"
    ends: list[int] = []
    for k, v in header.items():
        offsets = v.get("data_offsets") if isinstance(v, dict) else None
        if k == "__metadata__":
            continue
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int and o >= 0 for o in offsets)):
            return f"{p.name} has a tensor {str(k)[:40]!r} without its [start, end] byte offsets: not safetensors"
        ends.append(offsets[1])
    need = 8 + n + max(ends, default=0)
    if st.st_size < need:
        return f"{p.name} is {st.st_size} bytes but its header needs {need}: the file was cut short"
    return None
