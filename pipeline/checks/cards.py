"""The GPU a check is for, as a person names it: a card's compute capability from its name (`--gpu T4`,
`RTX 4090`, `sm_86`), and a memory size from `--gpu-mem` (`32GiB`, `24GB`). Only the target and the
`check` command read these; the estimate itself knows nothing of cards."""

from __future__ import annotations

import re

GIB = 1024**3

#: compute capability of cards people name with --gpu (bf16 needs 8.0 or newer: Ampere)
GPU_COMPUTE_CAPABILITY = {
    "p100": (6, 0),
    "v100": (7, 0),
    "t4": (7, 5),
    "rtx2080": (7, 5),
    "a100": (8, 0),
    "a10": (8, 6),
    "a10g": (8, 6),
    "a40": (8, 6),
    "rtx3090": (8, 6),
    "a6000": (8, 6),
    "l4": (8, 9),
    "l40s": (8, 9),
    "rtx4090": (8, 9),
    "h100": (9, 0),
    "h200": (9, 0),
    "rtx5090": (12, 0),
}


def parse_memory(text: str) -> float:
    """'32GiB', '24GB', '80' (GiB) -> GiB."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(gib|gb|g|mib|mb)?\s*", text.lower())
    if not m:
        raise ValueError(f"{text!r} is not a memory size; write e.g. 32GiB or 24GB")
    value, unit = float(m.group(1)), m.group(2) or "gib"
    factor = {"gib": 1.0, "g": 1.0, "gb": 1e9 / GIB, "mib": 1 / 1024, "mb": 1e6 / GIB}[unit]
    return value * factor


def gpu_capability(name: str) -> tuple[int, int] | None:
    """Compute capability from a card name (`T4`, `RTX 4090`, `A100-80GB`) or `sm_86` / `8.6`."""
    raw = re.sub(r"[\s-]", "", name.lower())
    if m := re.fullmatch(r"sm_?(\d{1,2})(\d)", raw):
        return int(m.group(1)), int(m.group(2))
    if m := re.fullmatch(r"(\d{1,2})\.(\d)", raw):
        return int(m.group(1)), int(m.group(2))
    key = re.sub(r"(geforce|nvidia|tesla|[^a-z0-9])", "", raw)
    for card in sorted(GPU_COMPUTE_CAPABILITY, key=len, reverse=True):
        if key.startswith(card):
            return GPU_COMPUTE_CAPABILITY[card]
    return None
