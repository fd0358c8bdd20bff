"""Reduced-depth shapes and the measured compatibility matrix: how a config is judged against it."""

import json

import pytest

from pipeline import checks, cli
from pipeline.core import config, models, startup_matrix
from tests.support import ROOT

LORA = ROOT / "configs" / "lora_style_transfer.yaml"
QLORA = ROOT / "configs" / "qlora_style_transfer.yaml"


def projection(path, *sets):
    report = checks.run(str(path), overrides=config.parse_overrides(sets), device="gpu", gpu=None, gpu_mem_gib=None)
    return report.facts["compat"]


# --- reduced depth ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", models.known_architectures())
def test_a_reduced_shape_keeps_every_width_and_only_its_first_layers(arch):
    full = models.architecture_config(arch)
    layers = models.min_layers(full)
    cut = models.architecture_config(f"{arch}?layers={layers}")
    text_full, text_cut = (c.get("text_config") or c for c in (full, cut))
    assert text_cut["num_hidden_layers"] == layers <= text_full["num_hidden_layers"]
    widths = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size",
              "num_experts", "num_local_experts", "moe_intermediate_size", "head_dim")
    assert {k: text_cut.get(k) for k in widths} == {k: text_full.get(k) for k in widths}
    assert text_cut.get("max_window_layers", 0) <= layers
    assert all(i < layers for i in text_cut.get("mlp_only_layers", []))


def test_min_layers_holds_every_kind_of_layer():
    from transformers import AutoConfig

    for arch in ("gemma-3-4b", "gemma-3-1b", "gemma-2-2b"):
        cut = models.architecture_config(f"{arch}?layers={models.min_layers(models.architecture_config(arch))}")
        text = AutoConfig.for_model(**{k: v for k, v in cut.items() if k != "architectures"}).get_text_config()
        full = AutoConfig.for_model(**{k: v for k, v in models.architecture_config(arch).items()
                                       if k != "architectures"}).get_text_config()
        assert set(text.layer_types) == set(full.layer_types), arch
    assert models.min_layers(models.architecture_config("gemma-3-4b")) == 6
    assert models.min_layers(models.architecture_config("llama-3.1-8b")) == 2


@pytest.mark.parametrize("name", ["phi-3.5-mini?layers=0", "phi-3.5-mini?layers=33", "phi-3.5-mini?depth=2",
                                  "phi-3.5-mini?layers=2&x=1", "phi-3.5-mini?layers=-1"])
def test_a_bad_layer_count_is_refused_with_the_range(name):
    with pytest.raises(KeyError, match="layers"):
        models.architecture_config(name)


def test_a_reduced_model_builds_under_its_own_name(tmp_path, monkeypatch):
    from transformers import AutoConfig

    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path))
    path = models.resolve("pipeline://random/smollm2-135m?layers=2")
    assert path.name == f"random-smollm2-135m-L2-r{models.RANDOM_RECIPE}-seed0"
    cfg = AutoConfig.from_pretrained(path)
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (2, 576, 49152)
    assert models.shipped_name("pipeline://random/smollm2-135m?layers=2") == "smollm2-135m"


def test_the_check_estimates_the_reduced_shape():
    cut = projection(LORA, "base_model=pipeline://random/llama-3.1-8b?layers=2")
    assert cut["architecture"] == "llama-3.1-8b"
    full = checks.run(str(LORA), overrides={}, device="gpu", gpu=None, gpu_mem_gib=None).facts["params"]["total"]
    reduced = checks.run(str(LORA), overrides={"base_model": "pipeline://random/llama-3.1-8b?layers=2"}, device="gpu",
                         gpu=None, gpu_mem_gib=None).facts["params"]["total"]
    assert reduced < full / 5


# --- the projection --------------------------------------------------------------------------------------


def test_the_projection_is_what_axolotl_switches_on_for_one_gpu():
    s = projection(LORA)["settings"]
    # the shipped config names no kernel: axolotl switches all four on
    assert [s[k] for k in startup_matrix.KERNELS] == [True] * 4
    assert (s["liger"], s["liger_rope"], s["sample_packing"], s["attention"]) == (True, True, True, "sdpa")
    named = projection(LORA, "lora_qkv_kernel=false")["settings"]  # naming one stops the others' switch
    assert [named[k] for k in startup_matrix.KERNELS] == [False] * 4
    full = projection(LORA, "adapter=", "lora_r=", "lora_alpha=", "lora_dropout=", "lora_target_linear=")
    assert full["adapter"] == "full" and not any(full["settings"][k] for k in startup_matrix.KERNELS)


def test_setting_changes_turn_one_projection_into_another():
    base = projection(LORA)["settings"]
    off = dict(base, liger=False, **{k: False for k in startup_matrix.LIGER_FLAGS}, attention="eager")
    changes = startup_matrix.setting_changes(base, off)
    assert changes == {"plugins": [], "liger_rope": None, "liger_rms_norm": None,
                       "liger_fused_linear_cross_entropy": None, "sdp_attention": False, "eager_attention": True}
    assert startup_matrix.as_set({"lora_qkv_kernel": False, "plugins": [], "liger_rope": None}) == \
        "--set lora_qkv_kernel=false --set plugins=[] --set liger_rope="


# --- judging a config against measured data --------------------------------------------------------------


VERSIONS = {"axolotl": "0.19.0", "torch": "2.11.0", "transformers": "5.17.0", "peft": "0.21.0"}


@pytest.fixture
def measured(tmp_path, monkeypatch):
    """A matrix in which phi-3.5-mini crashes under LoRA with the shipped settings and runs with the three
    attention and MLP kernels off (the shape of what benchmarks/startup_matrix.py writes)."""
    shipped = projection(LORA)["settings"]
    fixed = projection(LORA, "lora_qkv_kernel=false", "lora_o_kernel=false", "lora_mlp_kernel=false")["settings"]
    data = {"0.19.0": {"measured_on": {"card": "NVIDIA H200", "date": "2026-12-03", "versions": VERSIONS},
                       "shapes": {"phi-3.5-mini": {
        "lora": [{"trial": "shipped", "status": "crashes", "settings": shipped, "changes": [],
                  "error": "AssertionError: Original QKV code not found", "where": "axolotl/monkeypatch/lora_kernels.py:306"},
                 {"trial": "lora_kernels", "status": "ran", "settings": fixed, "tokens_per_s": 1000.0, "peak_gib": 3.5,
                  "changes": ["lora_qkv_kernel=false", "lora_o_kernel=false", "lora_mlp_kernel=false"]}],
        "qlora": [{"trial": "shipped", "status": "ran", "settings": projection(QLORA)["settings"]}]}}}}
    path = tmp_path / "compat.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv(startup_matrix.DATA_ENV, str(path))
    monkeypatch.setattr("pipeline.checks.matrix_lookup.axolotl_version", lambda: "0.19.0")
    return path


def test_a_measured_crash_is_an_error_naming_the_setting_and_its_set(measured, capsys):
    code = cli.main(["check", str(LORA), "--set", "base_model=microsoft/Phi-3.5-mini-instruct"])
    err = [ln for ln in capsys.readouterr().out.splitlines() if ": compat-crashes: " in ln]
    assert code == 2 and len(err) == 1
    line = err[0]
    base_model_line = 1 + LORA.read_text().splitlines().index(next(
        ln for ln in LORA.read_text().splitlines() if ln.startswith("base_model:")))
    assert line.startswith(f"{LORA}:{base_model_line}: compat-crashes: phi-3.5-mini with lora")
    assert "Original QKV code not found" in line and "lora_qkv_kernel: false" in line
    fix = line.split("(--set ", 1)[1].split(")", 1)[0]
    sets = ("--set " + fix).split()[1::2]
    after = projection(LORA, "base_model=microsoft/Phi-3.5-mini-instruct", *sets)
    assert after["status"] == "ran" and after["tokens_per_s"] == 1000.0


def test_the_start_up_line_gives_status_card_and_versions_not_the_stand_ins_speed(measured, capsys):
    """The measured tokens/s and peak are a 2-layer stand-in's: the line a person reads names what ran, on which
    card and with which versions, and no speed (facts.compat keeps the measurement for who wants it)."""
    kernels_off = [f"{k}=false" for k in ("lora_qkv_kernel", "lora_o_kernel", "lora_mlp_kernel")]
    args = ["check", str(LORA), "--set", "base_model=microsoft/Phi-3.5-mini-instruct"]
    for kv in kernels_off:
        args += ["--set", kv]
    assert cli.main(args) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  start-up ")]
    assert line.split(None, 1)[1].startswith("ran: phi-3.5-mini with lora and these settings started")
    assert "axolotl 0.19.0, torch 2.11.0, transformers 5.17.0, peft 0.21.0 on NVIDIA H200, 2026-12-03" in line
    assert "tokens/s" not in line and "1,000" not in line and "GiB" not in line
    assert projection(LORA, "base_model=microsoft/Phi-3.5-mini-instruct", *kernels_off)["tokens_per_s"] == 1000.0
    cli.main(["check", str(LORA), "--set", "base_model=microsoft/Phi-3.5-mini-instruct"])
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  start-up ")]
    assert line.split(None, 1)[1].startswith("crashes: phi-3.5-mini with lora") and "NVIDIA H200" in line


def test_what_the_matrix_says_of_configs_it_did_and_did_not_measure(measured):
    phi = "base_model=pipeline://random/phi-3.5-mini?layers=2"
    assert projection(QLORA, phi)["status"] == "ran"
    assert projection(LORA, phi)["fix"]["settings"] == {"lora_qkv_kernel": False, "lora_o_kernel": False,
                                                        "lora_mlp_kernel": False, "lora_embedding_kernel": False}
    other = projection(LORA, phi, "sample_packing=false")
    assert other["status"] == "untested" and "not with these settings" in other["why"]
    assert "was not measured" in projection(LORA, "base_model=pipeline://random/qwen3-8b")["why"]
    assert projection(LORA, "base_model=/nowhere/model")["why"].startswith("not a shipped architecture")


def test_another_axolotl_version_or_a_damaged_file_is_untested(measured, monkeypatch):
    monkeypatch.setattr("pipeline.checks.matrix_lookup.axolotl_version", lambda: "0.20.0")
    assert "measured with axolotl 0.19.0, not 0.20.0" in projection(LORA)["why"]
    measured.write_text("{not json")
    assert projection(LORA)["status"] == "untested"


# --- the shipped matrix ----------------------------------------------------------------------------------


#: shapes shipped after the matrix was measured (2026-12-03, on an H200): the check says `untested` for them until
#: `benchmarks/startup_matrix.py --only <these>` measures them on a GPU (docs/compat.md)
NOT_YET_MEASURED = {
    "codellama-13b", "codellama-34b", "codellama-7b", "deepseek-v2", "deepseek-v2-lite", "deepseek-v3", "falcon-7b",
    "falcon3-7b", "gemma-3-270m", "glm-4-32b-0414", "glm-4-9b-0414", "granite-3.1-2b", "granite-3.1-8b", "gpt-oss-120b", "gpt-oss-20b", "jamba-v0.1", "llama-3.1-405b", "llama-4-maverick",
    "llama-4-scout", "llama-7b", "ministral-8b", "mistral-7b-v0.2", "mistral-nemo-12b", "mistral-small-24b",
    "mistral-small-3.1-24b", "mixtral-8x22b", "olmo-2-13b", "olmo-2-32b", "open-llama-3b-v2", "phi-2", "pythia-1.4b",
    "pythia-12b", "qwen1.5-moe-a2.7b", "qwen3-235b-a22b", "qwen3-30b-a3b-2507", "qwen3-next-80b-a3b", "seed-oss-36b",
    "smollm3-3b", "stablelm-2-1.6b", "starcoder2-3b", "yi-34b",
}


def test_the_shipped_matrix_judges_the_shipped_configs_on_every_shape():
    """Every shipped shape measured has, under both shipped configs, a trial with exactly their projection: the
    check says ran or crashes for them, never untested. The shapes shipped since are named, so a new one is
    either measured or listed here."""
    shapes = startup_matrix.data()["0.19.0"]["shapes"]
    wanted = {"lora": projection(LORA)["settings"], "qlora": projection(QLORA)["settings"]}
    judged = [a for a in models.known_architectures()
              if all(any(t["settings"] == s for t in shapes.get(a, {}).get(k, [])) for k, s in wanted.items())]
    assert judged == sorted(set(models.known_architectures()) - NOT_YET_MEASURED)
    assert set(models.known_architectures()) >= NOT_YET_MEASURED and not NOT_YET_MEASURED & set(shapes)


def test_phi_3_5_under_the_shipped_lora_config_is_refused_naming_lora_qkv_kernel(capsys):
    from pipeline.checks.matrix_lookup import axolotl_version

    if axolotl_version() != "0.19.0":
        pytest.skip("the shipped matrix was measured with axolotl 0.19.0")
    code = cli.main(["check", str(LORA), "--set", "base_model=microsoft/Phi-3.5-mini-instruct"])
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ": compat-crashes: " in ln]
    assert code == 2 and len(lines) == 1
    assert "--set lora_qkv_kernel=false" in lines[0] and "Original QKV code not found" in lines[0]
    assert projection(LORA, "base_model=microsoft/Phi-3.5-mini-instruct", "lora_qkv_kernel=false",
                      "lora_o_kernel=false", "lora_mlp_kernel=false")["status"] == "ran"
    assert projection(LORA, "base_model=pipeline://random/llama-3.1-8b")["status"] == "ran"
