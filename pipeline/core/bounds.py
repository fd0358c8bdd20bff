"""Bounds a config declares for its own runs, in one place: the `pipeline: bounds:` section.

    pipeline:
      bounds:
        peak_vram_gib: 20        # GPU runs: whole-run peak of allocated memory, GiB
        peak_reserved_gib: 22    # GPU runs: whole-run peak of reserved memory, GiB
        peak_rss_gib: 4          # CPU runs: the axolotl process's peak resident memory, GiB
        final_loss: [0.5, 3.5]   # [min, max] of the last logged training loss (or just a max)
        loss_decrease: 0.05      # the final loss must be at least 5% below the first

A memory bound applies where its device was used; the others always. A broken bound is one line naming
the bound, the limit and the value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import Finding

KNOWN = ("peak_vram_gib", "peak_reserved_gib", "peak_rss_gib", "final_loss", "loss_decrease")


@dataclass(frozen=True)
class Verdict:
    bound: str
    limit: str
    value: float | None
    ok: bool

    def line(self, config: str) -> str:
        value = "not measured" if self.value is None else f"{self.value:.4g}"
        state = "ok" if self.ok else "FAILED"
        return f"{config}: bound {self.bound} {state}: limit {self.limit}, value {value}"

    def as_dict(self) -> dict[str, Any]:
        return {"bound": self.bound, "limit": self.limit, "value": self.value, "ok": self.ok}


def validate(bounds: Any, path: str, line: int | None) -> list[Finding]:
    """Findings for a malformed bounds section (unknown names, wrong shapes)."""
    if bounds is None:
        return []
    if not isinstance(bounds, dict):
        return [Finding(path, line, "bounds-shape", "pipeline.bounds must be a mapping of bound: limit")]
    found = []
    for name, limit in bounds.items():
        if name not in KNOWN:
            found.append(Finding(path, line, "bounds-unknown",
                                 f"unknown bound {name!r}; known bounds: {', '.join(KNOWN)}"))
        elif name == "final_loss":
            ok = isinstance(limit, (int, float)) or (
                isinstance(limit, list) and len(limit) == 2 and all(isinstance(x, (int, float)) for x in limit))
            if not ok:
                found.append(Finding(path, line, "bounds-shape", "final_loss must be a number (max) or [min, max]"))
        elif not isinstance(limit, (int, float)) or isinstance(limit, bool):
            found.append(Finding(path, line, "bounds-shape", f"{name} must be a number"))
    return found


def evaluate(bounds: dict[str, Any] | None, summary: dict[str, Any]) -> list[Verdict]:
    verdicts: list[Verdict] = []
    on_gpu = bool(summary.get("peak_vram_allocated_gib"))
    for name, limit in (bounds or {}).items():
        if name in ("peak_vram_gib", "peak_reserved_gib") and not on_gpu:
            continue
        if name == "peak_rss_gib" and on_gpu:
            continue
        if name == "peak_vram_gib":
            value = summary.get("peak_vram_allocated_gib")
            verdicts.append(Verdict(name, f"<= {limit} GiB", value, value is not None and value <= limit))
        elif name == "peak_reserved_gib":
            value = summary.get("peak_vram_reserved_gib")
            verdicts.append(Verdict(name, f"<= {limit} GiB", value, value is not None and value <= limit))
        elif name == "peak_rss_gib":
            value = summary.get("peak_rss_gib")
            verdicts.append(Verdict(name, f"<= {limit} GiB", value, value is not None and value <= limit))
        elif name == "final_loss":
            lo, hi = (limit if isinstance(limit, list) else [float("-inf"), limit])
            value = summary.get("final_loss")
            verdicts.append(Verdict(name, f"in [{lo}, {hi}]", value, value is not None and lo <= value <= hi))
        elif name == "loss_decrease":
            first, last = summary.get("first_loss"), summary.get("final_loss")
            value = (first - last) / first if first and last is not None else None
            verdicts.append(Verdict(name, f">= {limit:.0%} below the first loss", value,
                                    value is not None and value >= limit))
    return verdicts
