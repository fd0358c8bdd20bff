"""The GPU a check is for, as a person names it: a card's compute capability from its name (`--gpu T4`,
`RTX 4090`, `sm_86`), a memory size from `--gpu-mem` (`32GiB`, `24GB`), and a card's dense bf16 ceiling
for MFU (`dense_bf16_tflops`). The target, the `check` command and the smoke's MFU read these; the estimate
itself knows nothing of cards."""

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


#: dense (no sparsity) bf16 tensor-core TFLOP/s by card, only where the vendor publishes it or this repository
#: measured it; the key is the card's model as `dense_bf16_tflops` reduces its name. A measured ceiling is below
#: the published one (the H100 SXM: 798 measured, 989 published): MFU against a measured ceiling reads higher
DENSE_BF16_TFLOPS = {
    # measured on the lent H100 SXM (8192^3 bf16 matmul): benchmarks/README.md, the benchmarks' MFU basis
    "h100": 798.0,
    # the H100's chip and compute; this workplace's H200s measured 769-798 the same way (benchmarks/README.md)
    "h200": 798.0,
    # NVIDIA H100 datasheet: BF16 tensor core 1,513 TFLOP/s with sparsity, half of it dense
    "h100pcie": 756.0,
    # NVIDIA A100 datasheet: BF16 tensor core 312 TFLOP/s dense (624 with sparsity), SXM and PCIe alike
    "a100": 312.0,
    "a100pcie": 312.0,
    # NVIDIA L40S datasheet: BF16 tensor core 362.05 TFLOP/s dense (733 with sparsity)
    "l40s": 362.05,
    # NVIDIA L4 datasheet: BF16 tensor core 242 TFLOP/s with sparsity, half of it dense
    "l4": 121.0,
}


def dense_bf16_tflops(name: str) -> float | None:
    """The dense bf16 ceiling of a card by its name as the driver reports it (`NVIDIA H100 80GB HBM3`,
    `NVIDIA A100-SXM4-80GB`) or as people write it (`H200`), else None (a card not in DENSE_BF16_TFLOPS).

    Memory sizes and SXM or HBM words do not change the key; any other word does (`H100 NVL` is another card)."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    kept = [w for w in words if w not in ("nvidia", "tesla", "geforce")
            and not re.fullmatch(r"\d+gb|hbm\d*e?|sxm\d*", w)]
    return DENSE_BF16_TFLOPS.get("".join(kept))


def local_card() -> tuple[str, float] | None:
    """The first visible GPU's name and memory in GiB (asked of `pipeline.core.gpus`), or None."""
    from pipeline.core import gpus

    here = gpus.first()
    return None if here is None or here.memory_gib is None else (here.name, here.memory_gib)
