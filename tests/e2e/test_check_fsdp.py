"""`pipeline check --gpus N --nnodes M` on FSDP configs: the per-rank estimate, the advice for several ranks,
what axolotl refuses on several GPUs (its own validation, with the run's GPU count) and the layer class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support import ROOT, TINY

from pipeline import cli

DATA = str(ROOT / "data" / "processed" / "visions_training.jsonl")
FSDP2 = {"fsdp_version": 2, "fsdp_config": {"auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                            "transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                                            "state_dict_type": "FULL_STATE_DICT", "reshard_after_forward": True}}


def write(tmp_path: Path, name: str = "fsdp.yaml", **settings: object) -> str:
    cfg = {"base_model": "pipeline://random/llama-3.1-70b", "adapter": "qlora", "load_in_4bit": True,
           "datasets": [{"path": DATA, "type": "chat_template", "field_messages": "messages"}],
           "chat_template": "llama3", "sequence_len": 16384, "sample_packing": True, "micro_batch_size": 1,
           "gradient_accumulation_steps": 1, "lora_r": 64, "lora_alpha": 128, "lora_target_linear": True,
           "gradient_checkpointing": True, "bf16": True, "optimizer": "adamw_torch", "learning_rate": 2e-4,
           "num_epochs": 1, **FSDP2}
    cfg.update(settings)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = cli.main(["check", *args, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)["configs"][0]


def rules(report: dict) -> set[str]:
    return {f["rule"] for f in report["findings"] if f["severity"] == "error"}


def test_a_70b_qlora_that_fits_no_80gib_card_fits_sharded_over_two(capsys, tmp_path):
    path = write(tmp_path)
    code, one = check(capsys, path, "--gpu", "H100", "--gpu-mem", "80GiB")
    assert code == 2 and "vram-exceeds-gpu" in rules(one)
    code, two = check(capsys, path, "--gpu", "H100", "--gpu-mem", "80GiB", "--gpus", "2")
    assert code == 0 and "vram-exceeds-gpu" not in rules(two), two["findings"]
    memory = two["facts"]["memory"]
    assert memory["per"] == "per rank, FSDP over 2 ranks"
    assert memory["recommendation"].startswith("QLoRA fits no single 80 GiB card (~92.9 GiB) but fits sharded over "
                                               "2 ranks (~70.7 GiB per rank)")
    # two nodes of one GPU each shard the same way
    code, nodes = check(capsys, path, "--gpu", "H100", "--gpu-mem", "80GiB", "--nnodes", "2")
    assert code == 0 and nodes["facts"]["memory"]["qlora"] == two["facts"]["memory"]["qlora"]


def test_a_70b_full_fine_tune_fits_neither_one_card_nor_two(capsys, tmp_path):
    path = write(tmp_path, adapter=None, load_in_4bit=False)
    code, two = check(capsys, path, "--gpu", "H100", "--gpu-mem", "80GiB", "--gpus", "2")
    assert code == 2
    (line,) = [f["message"] for f in two["findings"] if f["rule"] == "vram-exceeds-gpu"]
    assert "a full fine-tune fits neither one 80 GiB card" in line and "nor sharded over 2 ranks" in line


def test_the_layer_class_must_be_one_of_the_model(capsys, tmp_path):
    wrong = write(tmp_path, base_model="pipeline://random/qwen2.5-0.5b", adapter="lora", load_in_4bit=False)
    code, report = check(capsys, wrong, "--gpu", "H100")
    assert code == 2
    (f,) = [f for f in report["findings"] if f["rule"] == "fsdp-layer-class"]
    assert "LlamaDecoderLayer is not a module of qwen2 models" in f["message"] and "Qwen2DecoderLayer" in f["message"]
    right = write(tmp_path, "right.yaml", base_model="pipeline://random/qwen2.5-0.5b", adapter="lora",
                  load_in_4bit=False, fsdp_config={**FSDP2["fsdp_config"],
                                                   "transformer_layer_cls_to_wrap": "Qwen2DecoderLayer"})
    code, report = check(capsys, right, "--gpu", "H100")
    assert "fsdp-layer-class" not in {f["rule"] for f in report["findings"]}


def test_axolotl_s_multi_gpu_refusals_are_judged_for_the_run_s_gpu_count(capsys, tmp_path):
    # FSDP1 with the LoRA kernels: axolotl refuses it on several GPUs only (check_multigpu_lora_kernels)
    path = write(tmp_path, base_model="pipeline://random/qwen2.5-0.5b", adapter="lora", load_in_4bit=False,
                 fsdp_version=1, lora_mlp_kernel=True,
                 fsdp_config={**FSDP2["fsdp_config"], "transformer_layer_cls_to_wrap": "Qwen2DecoderLayer"})
    _, one = check(capsys, path, "--gpu", "H100")
    assert "axolotl-validation" not in rules(one)
    code, two = check(capsys, path, "--gpu", "H100", "--gpus", "2")
    assert code == 2
    (line,) = [f["message"] for f in two["findings"] if f["rule"] == "axolotl-validation"]
    assert "not compatible with FSDP1" in line


def test_gpus_and_nnodes_must_be_positive(capsys, tmp_path):
    assert cli.main(["check", write(tmp_path), "--nnodes", "0"]) == 2
    assert "--nnodes 0: give 1 or more" in capsys.readouterr().err


def test_fsdp_on_a_cpu_run_is_refused_before_it_starts(capsys):
    code, report = check(capsys, TINY, "--set", "fsdp_version=2", "--set",
                         "fsdp_config={auto_wrap_policy: TRANSFORMER_BASED_WRAP, "
                         "transformer_layer_cls_to_wrap: LlamaDecoderLayer}", "--device", "cpu")
    assert code == 2
    (f,) = [f for f in report["findings"] if f["rule"] == "cpu-fsdp"]
    assert "builds FSDP's device mesh on CUDA" in f["message"]


CORPUS = ROOT.parent / "shared" / "corpus" / "axolotl-examples"
SHARDED = sorted(p for p in CORPUS.glob("*.y*ml") if "fsdp_config" in p.read_text()) if CORPUS.is_dir() else []


@pytest.mark.skipif(not SHARDED, reason=f"the corpus of axolotl's examples is not at {CORPUS}")
def test_axolotl_s_fsdp_examples_on_two_gpus_raise_no_new_finding(monkeypatch, tmp_path, capsys):
    """Axolotl's own FSDP examples, checked for two H100s (axolotl's validation with n_gpu 2, the layer class,
    the per-rank estimate): only the findings the one-GPU corpus test classifies as true problems."""
    import importlib.util

    import huggingface_hub.constants

    # the one-GPU corpus test's classification (tests are imported by path: --import-mode=importlib)
    spec = importlib.util.spec_from_file_location("corpus", Path(__file__).with_name("test_check_axolotl_examples.py"))
    assert spec is not None and spec.loader is not None
    corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpus)
    ENVIRONMENT, OFFLINE_ONLY, TRUE_PROBLEMS = corpus.ENVIRONMENT, corpus.OFFLINE_ONLY, corpus.TRUE_PROBLEMS

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    assert len(SHARDED) >= 50
    cli.main(["check", *map(str, SHARDED), "--gpu", "H100", "--gpus", "2", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    unexpected = sorted((Path(c["path"]).name, f["rule"]) for c in report["configs"] for f in c["findings"]
                        if f["rule"] not in OFFLINE_ONLY | ENVIRONMENT
                        and Path(c["path"]).name not in TRUE_PROBLEMS.get(f["rule"], []))
    assert unexpected == []


@pytest.mark.skipif(not SHARDED, reason=f"the corpus of axolotl's examples is not at {CORPUS}")
def test_a_real_fsdp_example_with_another_model_s_layer_class_is_refused(capsys, tmp_path):
    example = CORPUS / "qwen2_muon-pretrain-fsdp2.yaml"
    text = example.read_text()
    assert "transformer_layer_cls_to_wrap: Qwen2DecoderLayer" in text  # fsdp_-prefixed, as axolotl still reads it
    wrong = tmp_path / example.name
    wrong.write_text(text.replace("Qwen2DecoderLayer", "LlamaDecoderLayer"))
    _, right = check(capsys, str(example), "--gpu", "H100", "--gpus", "2")
    assert "fsdp-layer-class" not in {f["rule"] for f in right["findings"]}
    code, report = check(capsys, str(wrong), "--gpu", "H100", "--gpus", "2")
    assert code == 2
    (f,) = [f for f in report["findings"] if f["rule"] == "fsdp-layer-class"]
    assert f["line"] == next(i for i, line in enumerate(text.splitlines(), 1) if "Qwen2DecoderLayer" in line)
