"""`pipeline check` on the project's own configs, the seed's two mistakes, the output formats, the
advice for a card, the time it takes, and the token counts against axolotl's own tokenisation."""

from __future__ import annotations

import json

import pytest
from support import ROOT

from pipeline import cli
from pipeline.checks import data, lengths, registry
from pipeline.checks.review import inspect
from pipeline.core import config

SHIPPED = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*.yaml"))
LORA, QLORA, TINY = "configs/lora_style_transfer.yaml", "configs/qlora_style_transfer.yaml", "configs/tiny_cpu.yaml"
#: what the shipped GPU configs may warn about here: the Llama-3.1 model and tokenizer are not available
#: offline, and on 36 rows the packed run has at most 9 optimizer steps, where warmup_ratio gives no warmup
SHIPPED_WARNINGS = {"tokenizer-unavailable", "warmup-ratio-no-warmup", "model-offline"}


@pytest.fixture(autouse=True)
def _from_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def check_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = cli.main(["check", *args, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def findings(report: dict, path: str) -> list[dict]:
    return next(c for c in report["configs"] if c["path"] == path)["findings"]


def test_shipped_configs_have_no_errors_and_no_false_alarms(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = check_json(capsys, *SHIPPED)
    assert code == 0 and report["summary"]["errors"] == 0
    assert findings(report, TINY) == []
    for path in (LORA, QLORA):
        assert {f["rule"] for f in findings(report, path)} <= SHIPPED_WARNINGS, findings(report, path)


def test_shipped_facts(capsys: pytest.CaptureFixture[str]) -> None:
    _, report = check_json(capsys, *SHIPPED)
    facts = {c["path"]: c["facts"] for c in report["configs"]}
    assert [d["rows"] for d in facts[LORA]["data"]] == [36, 4]  # the seed's "36 training, 4 validation"
    assert facts[LORA]["params"]["trainable"] == facts[QLORA]["params"]["trainable"] == 167_772_160
    assert facts[TINY]["target"]["device"] == "cpu" and facts[LORA]["target"]["device"] == "gpu"
    tiny = facts[TINY]["schedule"]
    assert (tiny["train_rows"], tiny["total_steps"]) == (36, 72) and tiny["exact"]


def test_seed_mistake_1_eval_steps_without_validation_data(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = check_json(capsys, QLORA, "--set", "test_datasets=null", "--set", "evals_per_epoch=null",
                              "--set", "eval_steps=10")
    errors = [f for f in findings(report, QLORA) if f["severity"] == "error"]
    assert code == 2 and [f["rule"] for f in errors] == ["eval-without-data"]


def test_seed_mistake_2_embeddings_saved_without_new_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    _, report = check_json(capsys, LORA, "--set", "lora_modules_to_save=[embed_tokens, lm_head]")
    (f,) = [f for f in findings(report, LORA) if f["rule"] == "modules-to-save-without-new-tokens"]
    # 2 x 128,256 x 4,096 from the meta-device model, on top of r=64 all-linear LoRA
    assert "1,050,673,152 trainable parameters (2 x 128,256 x 4,096)" in f["message"]
    assert "LoRA's 167,772,160" in f["message"]
    facts = report["configs"][0]["facts"]["params"]
    assert facts["trainable"] == 167_772_160 + 1_050_673_152


def test_advice_for_a_32_gib_card(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = check_json(capsys, LORA, "--gpu-mem", "32GiB")
    assert code == 0
    assert report["configs"][0]["facts"]["memory"]["recommendation"].startswith("LoRA fits a 32 GiB card")


FULL = "benchmarks/configs/full_finetune.yaml"


def test_a_full_fine_tune_is_named_and_trains_every_weight(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = check_json(capsys, FULL, "--gpu-mem", "24GiB", "--gpu", "H100")
    facts = report["configs"][0]["facts"]
    assert code == 0 and facts["adapter"] == "full fine-tune"
    assert facts["params"]["trainable"] == facts["params"]["total"] == 1_543_714_304
    # measured on an H200: 16.63 GiB (docs/check.md, qwen1.5b-full-s4096)
    assert facts["memory"]["full"]["peak_gib"] == pytest.approx(16.63, rel=0.03)
    assert facts["memory"]["recommendation"].startswith("a full fine-tune fits a 24 GiB card")


def test_a_full_fine_tune_too_large_for_the_card_names_the_adapter_that_fits(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, report = check_json(capsys, FULL, "--gpu-mem", "12GiB", "--gpu", "H100")
    (finding,) = [f for f in report["configs"][0]["findings"] if f["rule"] == "vram-exceeds-gpu"]
    assert code == 2
    assert "a full fine-tune is estimated at ~16.6 GiB" in finding["message"]
    assert "set adapter: lora" in finding["message"]


def test_table_output_and_strict(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", TINY, LORA]) == 0
    out = capsys.readouterr().out
    assert f"{LORA}:" in out and "warmup-ratio-no-warmup" in out  # finding lines, path:line: rule: ...
    assert "| Config" in out and "tiny_cpu.yaml" in out and "167,772,160" in out
    assert cli.main(["check", TINY, "--strict"]) == 0
    assert cli.main(["check", LORA, "--strict"]) == 1
    capsys.readouterr()


def test_bad_gpu_mem_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", TINY, "--gpu-mem", "lots"]) == 2
    assert "gpu-mem" in capsys.readouterr().err


def test_byte_bound_holds_for_a_byte_level_tokenizer() -> None:
    loaded = config.load(TINY)
    cfg = {k: v for k, v in loaded.data.items() if k != config.PIPELINE_KEY}
    sets, _ = data.check(loaded, cfg)
    lengths.check(loaded, cfg, sets)
    for ds in sets:
        bounds = lengths.byte_bounds(ds, cfg)
        assert bounds is not None and ds.lengths is not None
        assert all(b >= n for b, n in zip(bounds, ds.lengths, strict=True))


def test_packed_schedule_bound_is_above_the_exact_one(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = config.load(TINY)
    loaded.data.update(sample_packing=True, sequence_len=1024, gradient_accumulation_steps=1, micro_batch_size=1)
    exact = inspect(loaded).facts["schedule"]
    monkeypatch.setattr(lengths, "tokenizer_for", lambda cfg: (None, "no tokenizer in this test"))
    bound = inspect(loaded).facts["schedule"]
    assert exact["exact"] and not bound["exact"]
    assert bound["sequences"] >= exact["sequences"] and bound["total_steps"] >= exact["total_steps"]


@pytest.mark.slow
def test_token_lengths_match_axolotls_own_tokenisation() -> None:
    from axolotl.prompt_strategies.chat_template import StrategyLoader
    from axolotl.utils.dict import DictDefault

    loaded = config.load(TINY)
    cfg = {k: v for k, v in loaded.data.items() if k != config.PIPELINE_KEY}
    tokenizer, _ = lengths.tokenizer_for(cfg)
    sets, _ = data.check(loaded, cfg)
    lengths.check(loaded, cfg, sets)
    strategy = StrategyLoader()(tokenizer, DictDefault({**cfg, "train_on_inputs": False}),
                                {"type": "chat_template", "field_messages": "messages", "chat_template": "llama3"})
    for ds in sets:
        assert list(ds.lengths or []) == [len(strategy.tokenize_prompt(row)["input_ids"]) for _, row in ds.rows()]


def test_every_rule_is_documented() -> None:
    doc = (ROOT / "docs" / "check.md").read_text()
    assert [r for r in registry.RULES if f"| `{r}` |" not in doc] == []
