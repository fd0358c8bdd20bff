"""A config that passed its checks is not checked again until it, its data or the rules change."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline.core import config, preflight, rules

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "data", tmp_path / "data")
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "configs" / "tiny_cpu.yaml", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = rules.inspect

    def inspect(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rules, "inspect", inspect)
    return calls


def test_a_passed_config_is_remembered_until_its_data_changes(project, tmp_path, monkeypatch):
    calls = counting(monkeypatch)
    cache = tmp_path / "checks"
    cfg = config.load("configs/tiny_cpu.yaml")
    first = preflight.findings(cfg, cache)
    assert not preflight.errors(first) and len(calls) == 1 and len(list(cache.iterdir())) == 1

    assert preflight.findings(config.load("configs/tiny_cpu.yaml"), cache) == first
    assert len(calls) == 1  # remembered: the rules did not run again

    rows = project / "data" / "processed" / "visions_training.jsonl"
    rows.write_text(rows.read_text() + rows.read_text().splitlines()[0] + "\n")
    preflight.findings(config.load("configs/tiny_cpu.yaml"), cache)
    assert len(calls) == 2  # the data changed: checked afresh

    path = project / "configs" / "tiny_cpu.yaml"
    path.write_text(path.read_text().replace("lora_r: 8", "lora_r: 16"))
    preflight.findings(config.load("configs/tiny_cpu.yaml"), cache)
    assert len(calls) == 3  # the config changed: checked afresh


def test_a_config_with_errors_is_checked_every_time(project, tmp_path, monkeypatch):
    path = project / "configs" / "tiny_cpu.yaml"
    path.write_text(path.read_text().replace("lora_r: 8", "lora_r: 0"))
    calls = counting(monkeypatch)
    for expected in (1, 2):
        assert preflight.errors(preflight.findings(config.load("configs/tiny_cpu.yaml"), tmp_path / "checks"))
        assert len(calls) == expected
    assert not (tmp_path / "checks").exists() or not os.listdir(tmp_path / "checks")


def test_no_cache_dir_means_no_memory(project, monkeypatch):
    calls = counting(monkeypatch)
    for _ in range(2):
        preflight.findings(config.load("configs/tiny_cpu.yaml"))
    assert len(calls) == 2


def test_no_nvidia_driver_answers_without_torch(monkeypatch):
    """On a machine without NVIDIA's driver the launching process must not import torch to learn that."""
    import sys

    if os.path.exists("/dev/kfd") or os.path.exists("/dev/nvidiactl"):
        pytest.skip("a GPU driver is present here")
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(rules, "_torch_cuda", lambda: pytest.fail("asked torch"))
    assert rules._local_cuda() is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert rules._local_cuda() is None
