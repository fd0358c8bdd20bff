"""The one bounded reader: every file pipeline reads (configs, datasets, manifests, metrics, adapters,
checkpoints, merged models) is opened here.

A file is checked before it is opened: `os.stat` (or `os.lstat` for the files pipeline writes into a
run folder, where a symlink is itself refused) must show a regular file of at most the limit; a FIFO, a
device such as /dev/zero behind a symlink, a socket or a directory is refused with one line, never
opened. It is then opened with O_NONBLOCK (a file swapped for a FIFO between the check and the open
cannot block; with O_NOFOLLOW for run-folder files) and checked again on the open descriptor (`fstat`,
so what is read is what was judged), then read as a stream: line by line with a cap on each line, or
whole, reading at most limit + 1 bytes however the file grows meanwhile. Text must be UTF-8.

Problems raise `BadFile`, which the caller turns into a `Finding` at the place the user can fix: the
config line that names a dataset, or the line of the data file itself.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pipeline.core.errors import Finding, UserError

MiB = 2**20
#: a config is a few kilobytes; a chat template inline is still far below this
MAX_CONFIG_BYTES = 1 * MiB
#: datasets: the whole file, and one line of it (a row of 128k tokens is about 0.5 MiB of text)
DATA_BYTES_ENV, DEFAULT_DATA_BYTES = "PIPELINE_MAX_DATA_BYTES", 4 * 2**30
LINE_BYTES_ENV, DEFAULT_LINE_BYTES = "PIPELINE_MAX_LINE_BYTES", 4 * MiB
#: files pipeline wrote itself (manifests, trainer state): never this large unless damaged
MAX_RECORD_BYTES = 64 * MiB
#: metrics.jsonl: about 600 bytes a logged step, so a million steps; a longer one is damaged
MAX_METRICS_BYTES = 1024 * MiB
#: one line of metrics.jsonl (a record is under 1 KiB)
MAX_METRICS_LINE = 1 * MiB
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


def check_regular(path: str | os.PathLike[str], rule: str, max_bytes: int, what: str = "file", *,
                  follow: bool = True) -> os.stat_result:
    """The file's stat, after refusing anything but a regular file of at most `max_bytes` (never opened).

    follow: False for the files pipeline itself writes into a run folder: a symlink there is refused
    (pipeline never writes one), whatever it points to."""
    p = Path(path)
    try:
        st = os.stat(p) if follow else os.lstat(p)
    except FileNotFoundError:
        raise BadFile(f"{rule}-missing", f"{what} not found; check the path") from None
    except ValueError:  # a NUL byte in the name
        raise BadFile(f"{rule}-missing", f"{what} not found (its name holds a NUL byte); check the path") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise BadFile(f"{rule}-missing", f"{what} not found: its path is longer than the file system allows; "
                                             f"check the path") from None
        raise BadFile(f"{rule}-unreadable", f"{what} cannot be read ({exc.strerror}); check its permissions") from None
    _judge(p, st, rule, max_bytes, what, follow)
    return st


#: what to do about a file pipeline wrote into a run folder that is not what it wrote
RESTORE = "pipeline writes a regular file there: restore it, or move the run folder aside"


def _judge(p: Path, st: os.stat_result, rule: str, max_bytes: int, what: str, follow: bool = True) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise BadFile(f"{rule}-not-file", f"{what} is a symbolic link (to {_target(p)}); {RESTORE}")
    if not stat.S_ISREG(st.st_mode):
        fix = "name a .yaml file in it" if stat.S_ISDIR(st.st_mode) and rule == "config" else \
            "point it at a regular file" if follow else RESTORE
        raise BadFile(f"{rule}-not-file", f"{what} {_is_not(p, st.st_mode)}, not a regular file; {fix}")
    if st.st_size > max_bytes:
        raise BadFile(f"{rule}-too-large", f"{what} is {human(st.st_size)}, over the limit of {human(max_bytes)}; "
                                           f"{_raise_hint(rule) if follow else RESTORE}")


def _target(p: Path) -> str:
    try:
        return os.readlink(p)
    except OSError:
        return "?"


def _raise_hint(rule: str) -> str:
    if rule == "data":
        return f"split it, or raise ${DATA_BYTES_ENV}"
    if rule == "config":
        return "a config is a few kilobytes: is this the right file?"
    return "the file is damaged or not the one expected"


def open_regular(path: str | os.PathLike[str], rule: str, max_bytes: int, what: str = "file", *,
                 follow: bool = True) -> IO[bytes]:
    """A binary stream on a regular file, checked before and after opening (no open can block)."""
    p = Path(path)
    check_regular(p, rule, max_bytes, what, follow=follow)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:  # removed since the stat above
        raise BadFile(f"{rule}-missing", f"{what} not found; check the path") from None
    except OSError as exc:
        if not follow and exc.errno == errno.ELOOP:  # swapped for a symlink since the lstat above
            raise BadFile(f"{rule}-not-file", f"{what} is a symbolic link, where pipeline writes a regular file; "
                                              f"restore the file") from None
        raise BadFile(f"{rule}-unreadable", f"{what} cannot be opened ({exc.strerror})") from None
    try:
        _judge(p, os.fstat(fd), rule, max_bytes, what, follow)  # it may have been swapped since the stat above
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


def read_bytes(path: str | os.PathLike[str], rule: str, max_bytes: int, what: str = "file", *,
               follow: bool = True) -> bytes:
    """The whole file, at most `max_bytes` however it grows while it is read."""
    with open_regular(path, rule, max_bytes, what, follow=follow) as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BadFile(f"{rule}-too-large", f"{what} grew past {human(max_bytes)} while it was read; "
                                           f"{_raise_hint(rule)}")
    return data


def read_text(path: str | os.PathLike[str], rule: str, max_bytes: int, what: str = "file", *,
              follow: bool = True) -> str:
    """The whole file as UTF-8 text (a leading byte-order mark dropped); binary or other encodings refused."""
    data = read_bytes(path, rule, max_bytes, what, follow=follow)
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


def records(path: str | os.PathLike[str], rule: str, what: str = "file") -> Iterator[str]:
    """Each line of a JSONL file pipeline's recorder writes (metrics.jsonl), streamed and bounded: a line
    that is not UTF-8 or is over MAX_METRICS_LINE (damaged, or cut short by a crash) is skipped, not
    fatal; the file itself must be a regular file (not a symlink) of at most MAX_METRICS_BYTES. A missing
    file has no lines."""
    if not os.path.lexists(path):
        return
    total = 0
    with open_regular(path, rule, MAX_METRICS_BYTES, what, follow=False) as fh:
        while raw := fh.readline(MAX_METRICS_LINE + 1):
            total += len(raw)
            if total > MAX_METRICS_BYTES:
                raise BadFile(f"{rule}-too-large", f"{what} grew past {human(MAX_METRICS_BYTES)} while it was read; "
                                                   f"{_raise_hint(rule)}")
            if len(raw) > MAX_METRICS_LINE:  # the rest of an overlong line: skip to its end
                while raw and not raw.endswith(b"\n"):
                    raw = fh.readline(MAX_METRICS_LINE + 1)
                    total += len(raw)
                continue
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
