"""Start-up: a combination of architecture, adapter and settings measured to crash axolotl as it starts."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.checks.context import Context
from pipeline.checks.matrix_lookup import crash_line, facts
from pipeline.checks.registry import rule
from pipeline.core import startup_matrix


@rule("compat-crashes", "error", "an architecture, adapter and settings that axolotl accepts and then crashes on "
                                 "at start-up (measured on a GPU: pipeline/architectures/compat.json)")
def _crashes(ctx: Context) -> Iterator[tuple[tuple[str | int, ...], str]]:
    f = facts(ctx)
    if f["status"] != startup_matrix.CRASHES:
        return
    keys = [k for k in (f.get("fix") or {}).get("settings", {}) if k in ctx.cfg] or ["base_model"]
    yield (keys[0],), crash_line(f)
