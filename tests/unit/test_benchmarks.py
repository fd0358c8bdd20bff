"""The benchmark's FLOPs-per-token formula (pipeline.checks.flops) against independently known parameter counts of Llama-3.1-8B."""

from __future__ import annotations

import importlib.util

from support import ROOT

from pipeline.checks import flops, shapes
from pipeline.core import models


def load_run():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flops_per_token_counts_the_8b_shape():
    # the benchmark's MFU uses the product's formula (the smoke table's too), on the run's resolved config
    run = load_run()
    assert run.flops is flops
    shape = shapes.shape(models.architecture_config("llama-3.1-8b"))
    f = flops.per_token(shape, {"adapter": "lora", "lora_r": 64, "lora_target_linear": True, "sequence_len": 4096},
                        "lora")
    fpt, n_base, n_adapter = f.per_token, f.base_params, f.adapter_params
    # Llama-3.1-8B has 8,030,261,248 parameters; without the input embeddings (128,256 x 4,096) and the
    # RMSNorm weights (65 x 4,096) the linear layers and lm_head hold the rest
    assert n_base == 8_030_261_248 - 128_256 * 4096 - 65 * 4096
    assert n_adapter == 167_772_160  # what axolotl reports as trainable for r=64 on all linear layers
    assert fpt == 4 * n_base + 6 * n_adapter + 8 * 32 * 4096 * 4096


def test_the_plain_run_measures_the_shipped_configs_beside_their_baselines():
    run = load_run()
    assert set(run.STANDARD) == {"baseline_lora", "lora", "baseline_qlora", "qlora"}
    assert all(v in run.VARIANTS for v in run.STANDARD)
    for name in run.STANDARD:
        assert run.VARIANTS[name][0].is_file()


def test_the_offline_count_knows_a_shipped_shape_and_not_an_unknown_model(tmp_path, monkeypatch, capsys):
    """benchmarks/offline_shapes.py on three configs: one on a shipped shape's hub id, one on a model that does not
    ship (the hub forbidden: unknown), one without a base model (left out of both counts)."""
    spec = importlib.util.spec_from_file_location("bench_offline", ROOT / "benchmarks" / "offline_shapes.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for key in ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "PIPELINE_CACHE"):  # main sets them: put back after
        monkeypatch.setenv(key, "unset")
    (tmp_path / "a.yaml").write_text("base_model: openai/gpt-oss-20b\n")
    (tmp_path / "b.yml").write_text("base_model: someone/never-shipped-7b\n")
    (tmp_path / "c.yaml").write_text("datasets: []\n")
    monkeypatch.setattr("sys.argv", ["offline_shapes.py", str(tmp_path), "--list"])
    assert module.main() == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"1 of 2 configs in {tmp_path}: base model known offline (1 distinct models not known)")
    assert out[1].split() == ["1", "someone/never-shipped-7b"]
