"""What pipeline prints, guarded: escaped for the terminal, and a terminal that cannot take it is one line.

`guarded()` wraps `sys.stdout` and `sys.stderr` for one command (`cli.main`):

- every write is escaped as `errors.printable` escapes a name, except that a line break, a tab and a
  carriage return pass (pipeline's own lines, and the progress bars of the libraries evaluate loads):
  an escape sequence, a C1 control or a bidirectional override that reached a message unescaped is
  still written as `\\x1b`, `\\x85`, `\\u202e`;
- a character the stream's encoding cannot hold (`PYTHONIOENCODING=ascii`, `LC_ALL=C` without UTF-8
  mode) is written as an escape instead of raising UnicodeEncodeError;
- a stream that refuses a write (closed, a full disk such as `/dev/full`, a reader that went away) is
  noted and written no more: the command goes on, so a run still ends and records how it ended, and
  at its end `lost()` names the stream for one `output-unwritable` line on the other (exit 3).

Axolotl's own output, which the launcher relays (core/engine), is written as it is (`relay`).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import IO, Any, TextIO

from pipeline.core.errors import IN_TEXT

#: what a whole line of pipeline's text may keep: line breaks, tabs, and carriage returns for progress bars
_ESCAPES = {c: v for c, v in IN_TEXT.items() if c != 0x0D}


class Guarded(io.TextIOBase):
    """A text stream that escapes what it is given and never raises for a stream that stopped working."""

    def __init__(self, stream: TextIO | None, name: str) -> None:
        super().__init__()
        self.raw, self.name = stream, name
        self.failure: str | None = None if stream is not None else "it is closed"

    def write(self, s: str) -> int:
        text = str(s).translate(_ESCAPES)
        if self.raw is None:
            self.failure = self.failure or "it is closed"
            return len(s)
        if self._dropped:
            return len(s)
        return self._put(text, len(s))

    def relay(self, text: str) -> None:
        """Write `text` as it is (a child's output with its progress bars), with the same fault handling."""
        if self.raw is None:
            self.failure = self.failure or "it is closed"
        elif not self._dropped:
            self._put(text, len(text))

    def _put(self, text: str, n: int) -> int:
        assert self.raw is not None
        encoding = getattr(self.raw, "encoding", None) or "utf-8"
        try:
            text.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            text = text.encode(encoding, "backslashreplace").decode(encoding, "replace")
        try:
            self.raw.write(text)
            if "\n" in text or "\r" in text:
                self.raw.flush()
        except (OSError, ValueError) as exc:  # ValueError: a stream that was closed in this process
            self._lose(exc)
        return n

    _dropped = False

    def _lose(self, exc: BaseException) -> None:
        self.failure = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        self._dropped = True
        # what is still buffered would fail again when the interpreter flushes the stream at exit
        with contextlib.suppress(OSError, ValueError, AttributeError, io.UnsupportedOperation):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self.raw.fileno())  # type: ignore[union-attr]
            os.close(null)

    def flush(self) -> None:
        if self.raw is None or self._dropped:
            return
        try:
            self.raw.flush()
        except (OSError, ValueError) as exc:
            self._lose(exc)

    def isatty(self) -> bool:
        try:
            return bool(self.raw is not None and not self._dropped and self.raw.isatty())
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        if self.raw is None:
            raise io.UnsupportedOperation("closed")
        return self.raw.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.raw, "encoding", None) or "utf-8"

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # buffer, errors, ...: the stream's own
        return getattr(self.raw, name)


@contextlib.contextmanager
def guarded() -> Iterator[tuple[Guarded, Guarded]]:
    """sys.stdout and sys.stderr guarded for the block (restored after it)."""
    saved = sys.stdout, sys.stderr
    out, err = Guarded(sys.stdout, "standard output"), Guarded(sys.stderr, "standard error")
    out.failure = None  # a closed stream counts as lost only once something is written to it
    err.failure = None
    sys.stdout, sys.stderr = out, err
    try:
        yield out, err
    finally:
        for stream in (out, err):
            stream.flush()
        sys.stdout, sys.stderr = saved


def relay(stream: IO[str], text: str) -> None:
    """Write a child's output as it is (its progress bars keep their escapes) to a stream, guarded or not;
    a stream that refuses it is the guard's to note, and an unguarded one's failure is ignored."""
    if isinstance(stream, Guarded):
        stream.relay(text)
        return
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass
