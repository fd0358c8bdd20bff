"""Errors a person can act on.

Every problem with the user's input is reported as one line, `path:line: rule-id: what is wrong; what to
change`, and the command exits with status 2 before anything is written. Failures of the run itself
(axolotl's own exit status, a broken bound) use other exit codes; see `ExitCode`.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass


class ExitCode(enum.IntEnum):
    OK = 0
    #: the run finished but a bound, a gate or (with --strict) a warning failed
    FAILED = 1
    #: bad input: config, data or arguments; nothing was written
    USAGE = 2
    #: the training engine (axolotl) or another child process failed
    ENGINE = 3
    #: interrupted by the user or a signal; the run folder is kept for --resume
    INTERRUPTED = 130


@dataclass(frozen=True)
class Finding:
    """One problem found in a config or a data file."""

    path: str
    line: int | None
    rule: str
    message: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return printable(f"{where}: {self.rule}: {self.message}")

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
        }


#: line breaks and other control characters (a user's key, value or file name may hold any), as escapes:
#: C0 (ESC, CR, LF, ...), DEL, C1, the Unicode line and paragraph separators, and the bidirectional
#: overrides and isolates that make a terminal show text in another order than it was written (CVE-2021-42574)
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if c != 0x09} | {
    0x0A: "\\n", 0x0D: "\\r"} | {c: f"\\u{c:04x}" for c in (0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F),
                                                          *range(0x2066, 0x206A))}
#: the same, but a line break and a tab pass: for whole lines of pipeline's own text (core.terminal)
IN_TEXT = {c: v for c, v in _CONTROLS.items() if c != 0x0A}
#: invisible format characters that join scripts and emoji, and pass as they are
_JOINERS = frozenset("\u200c\u200d")


def printable(text: str) -> str:
    """`text` as one line any terminal can print: control characters, line breaks and bidirectional
    overrides escaped, and every other invisible format character (Unicode's Cf: zero-width spaces, tag
    characters that hide text, a byte-order mark; the two joiners scripts and emoji need excepted) and
    lone surrogate (an undecodable byte of a path on the command line) written as an escape (`\\udcff`)
    instead of hidden or failing print(). Every name, path or manifest field pipeline prints goes through
    this (a table's cells, a finding, a note)."""
    text = str(text).translate(_CONTROLS)
    if text.isascii():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in ("Cf", "Cs", "Co") and c not in _JOINERS else c
                   for c in text)


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\u{n:04x}" if n <= 0xFFFF else f"\\U{n:08x}"


class UserError(Exception):
    """Bad input. Printed as one line per finding; exit status 2."""

    def __init__(self, *findings: Finding) -> None:
        super().__init__("\n".join(str(f) for f in findings))
        self.findings = list(findings)

    @classmethod
    def at(cls, path: str, line: int | None, rule: str, message: str) -> UserError:
        return cls(Finding(str(path), line, rule, message))


class WriteRefused(Exception):
    """The disk refused a write outside a run folder (full, read-only, not permitted), e.g. a model built
    into the cache: printed as its one finding, exit status 3 (ENGINE); nothing half-written is kept."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(str(finding))
        self.finding = finding


#: child exit statuses that mean "stopped by a signal" (128 + SIGINT, 128 + SIGTERM): an interruption,
#: reported as ExitCode.INTERRUPTED, never as a failure of the engine
SIGNALLED = (130, 143)
