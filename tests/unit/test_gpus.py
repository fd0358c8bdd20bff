"""The one GPU probe (pipeline.core.gpus): every caller sees the GPUs CUDA_VISIBLE_DEVICES leaves visible, and
asking costs no torch import where there is nothing to find."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pipeline.core import gpus, provenance

PROBE = "import sys; from pipeline.core.gpus import cuda_answers; print(cuda_answers(), 'torch' in sys.modules)"


def test_cuda_switched_off_is_answered_without_torch() -> None:
    for visible in ("", "-1"):
        out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, "CUDA_VISIBLE_DEVICES": visible},
                             capture_output=True, text=True, check=True).stdout.split()
        assert out == ["False", "False"]


def test_the_answer_agrees_with_torch() -> None:
    import torch

    assert gpus.cuda_answers() == torch.cuda.is_available()


def test_no_nvidia_driver_answers_without_torch(monkeypatch):
    """On a machine without NVIDIA's driver the launching process must not import torch to learn that."""
    if os.path.exists("/dev/kfd") or os.path.exists("/dev/nvidiactl"):
        pytest.skip("a GPU driver is present here")
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(gpus, "_torch_devices", lambda limit: pytest.fail("asked torch"))
    assert gpus.first() is None
    assert gpus.devices() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpus.first() is None


class _Memory:
    def __init__(self, total: int) -> None:
        self.total = total


@pytest.fixture
def four_cards(monkeypatch):
    """A fake NVML with four cards: index i is `card-i` with i+1 GiB, UUID `GPU-i`."""
    nvml = types.ModuleType("pynvml")
    nvml.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: 4  # type: ignore[attr-defined]
    nvml.nvmlSystemGetDriverVersion = lambda: b"560.35"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByUUID = lambda u: int(u.split("-")[1])  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda h: f"card-{h}".encode()  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = lambda h: _Memory((h + 1) * 2**30)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return nvml


def test_every_card_is_seen_where_nothing_narrows_them(four_cards):
    assert gpus.count() == 4
    assert [g.name for g in gpus.devices()] == ["card-0", "card-1", "card-2", "card-3"]


def test_cuda_visible_devices_narrows_and_orders_the_cards(four_cards, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-1")
    assert gpus.count() == 2
    assert [g.name for g in gpus.devices()] == ["card-2", "card-1"]
    first = gpus.first()
    assert first is not None and first.name == "card-2" and first.memory_gib == 3.0 and first.capability == (9, 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpus.count() == 0 and gpus.devices() == [] and gpus.first() is None


def test_the_manifest_records_the_visible_cards_only(four_cards, monkeypatch):
    """The manifest's hardware (and the smoke's MFU card, its `accelerator`) is what the run may use."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    hw = provenance.hardware()
    assert hw["gpus"] == [{"name": "card-3", "driver": "560.35", "memory": "4096 MiB"}]
    assert hw["accelerator"] == "card-3"


def test_the_check_and_compute_ask_the_same_probe(four_cards, monkeypatch):
    from pipeline.checks import target
    from pipeline.core import cards
    from pipeline.core.config import LoadedConfig

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert cards.local_card() == ("card-1", 2.0)
    t = target.target_for(LoadedConfig(Path("x.yaml"), {"base_model": "some/model"}))
    assert (t.gpu, t.capability, t.why) == ("card-1", (9, 0), "the GPU here")
