"""The pipe table every command prints (check, smoke, runs): GitHub-flavoured markdown, padded."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.core.errors import printable


def cell(value: object) -> str:
    """A cell as one line that cannot add a row or a column: control characters, line breaks and
    bidirectional overrides escaped (errors.printable), a tab as `\\t`, and `|` written as markdown's `\\|`."""
    return printable(str(value)).replace("|", "\\|").replace("\t", "\\t")


def pipe_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """The rows under the header, padded; every cell escaped (`cell`), so each row is exactly one line."""
    cells = [[cell(c) for c in header], *[[cell(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def fmt(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    return "\n".join([fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, cells[1:])])
