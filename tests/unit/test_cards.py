"""Cards as a person names them: `--gpu-mem` sizes and `--gpu` names to compute capabilities."""

from __future__ import annotations

import pytest

from pipeline.core import cards


@pytest.mark.parametrize(("text", "gib"), [("32GiB", 32.0), ("80", 80.0), ("24GB", 24e9 / 2**30),
                                           ("512MiB", 0.5)])
def test_parse_memory(text: str, gib: float) -> None:
    assert cards.parse_memory(text) == pytest.approx(gib)


def test_parse_memory_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        cards.parse_memory("lots")


@pytest.mark.parametrize(("name", "cc"), [("T4", (7, 5)), ("RTX 4090", (8, 9)), ("A100-80GB", (8, 0)),
                                          ("sm_120", (12, 0)), ("8.6", (8, 6)), ("V100", (7, 0)),
                                          ("potato", None)])
def test_gpu_capability(name: str, cc: tuple[int, int] | None) -> None:
    assert cards.gpu_capability(name) == cc


@pytest.mark.parametrize(("name", "tflops"), [("NVIDIA H100 80GB HBM3", 798.0), ("NVIDIA H200", 798.0), ("h200", 798.0),
                                              ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L4", 121.0),
                                              ("NVIDIA H100 PCIe", 756.0)])
def test_dense_bf16_ceiling_of_a_listed_card(name: str, tflops: float) -> None:
    assert cards.dense_bf16_tflops(name) == tflops


@pytest.mark.parametrize("name", ["cpu", "NVIDIA H100 NVL", "NVIDIA L40", "NVIDIA GeForce RTX 4090", ""])
def test_a_card_not_listed_has_no_ceiling(name: str) -> None:
    # a near name is another card (L40 is not L4, H100 NVL is not the measured H100): no MFU beats a wrong one
    assert cards.dense_bf16_tflops(name) is None
