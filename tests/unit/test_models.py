import json

import pytest

from pipeline.core import models


def test_tiny_model_builds_identically_from_the_same_seed(tmp_path, monkeypatch):
    from pipeline.core.runs import sha256_file

    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "a"))
    a = models.resolve("pipeline://tiny-llama")
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "b"))
    b = models.resolve("pipeline://tiny-llama")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert sha256_file(a / name) == sha256_file(b / name), name
    c = models.resolve("pipeline://tiny-llama", seed=1)
    assert sha256_file(c / "model.safetensors") != sha256_file(a / "model.safetensors")
    assert not [p for p in (tmp_path / "a" / "models").iterdir() if p.name.startswith(".")], "no temp left"


def test_tiny_tokenizer_speaks_llama3_chat(tmp_path, monkeypatch):
    from transformers import AutoConfig, AutoTokenizer

    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path))
    path = models.resolve("pipeline://tiny-llama")
    tok = AutoTokenizer.from_pretrained(path)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
                                   tokenize=False)
    assert text == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|>")
    # byte-level: any text round-trips, coined words included
    assert tok.decode(tok("neurolink Balthazar ŋ")["input_ids"]) == "neurolink Balthazar ŋ"
    cfg = AutoConfig.from_pretrained(path)
    assert cfg.model_type == "llama" and cfg.vocab_size >= len(tok)


def test_architecture_configs_ship_the_real_shapes():
    cfg = models.architecture_config("meta-llama/Llama-3.1-8B")
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == (4096, 32, 128256)
    assert json.loads((models.ARCHITECTURES / "llama-3.1-8b" / "config.json").read_text()) == cfg
    with pytest.raises(KeyError):
        models.architecture_config("gpt-17")


def test_random_architecture_model_has_the_shape_of_the_real_one(tmp_path, monkeypatch):
    """A random-weights build of a shipped architecture, shrunk here only in depth to stay fast on CPU."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path))
    monkeypatch.setitem(models.HUB_ARCHITECTURES, "test/small", "small")
    arch = tmp_path / "arch" / "small"
    arch.mkdir(parents=True)
    cfg = models.architecture_config("llama-3.1-8b")
    cfg.update(num_hidden_layers=1, hidden_size=256, intermediate_size=512, num_attention_heads=4,
               num_key_value_heads=2, head_dim=64, vocab_size=4096)
    (arch / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(models, "ARCHITECTURES", tmp_path / "arch")
    path = models.resolve("pipeline://random/small")
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.hidden_size == 256 and model.config.rope_scaling["rope_type"] == "llama3"
    w = model.model.layers[0].mlp.up_proj.weight
    assert abs(float(w.std()) - 0.02) < 0.002  # initialised, not left as empty memory
