"""`pipeline evaluate` without models: scores, gates and their config, charts, the report, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from support import ROOT

from pipeline.core import runs
from pipeline.core.errors import UserError
from pipeline.stages import evaluate, scoring

TERMS = evaluate.read_terms(ROOT / "data" / "style_terms.txt")


def test_style_terms_count_case_sensitive_whole_words():
    assert len(TERMS) == 12 and "Verdant Choir" in TERMS and not any(t.startswith("#") for t in TERMS)
    text = "The Gaea-pulse hummed through the Verdant Choir; Loomwaters rose and a loomwater fell."
    assert scoring.found_terms(text, TERMS) == ["Verdant Choir", "Gaea-pulse"]
    assert scoring.found_terms("the neurolinked city", TERMS) == []
    assert scoring.found_terms("by neurolink.", TERMS) == ["neurolink"]
    spans = scoring.term_spans(text, TERMS)
    assert [text[a:b] for a, b in spans] == ["Gaea-pulse", "Verdant Choir"]  # where the report highlights
    assert scoring.term_spans("Hollow Bloom, hollow bloom", TERMS) == [[0, 12]]


def test_content_recall_counts_the_source_content_words():
    source = "Every morning Priya rides her bicycle twelve kilometers to work."
    assert scoring.content_recall(source, source) == 1.0
    assert scoring.content_recall(source, "the the and to her") == 0.0
    # content words: every morning priya rides bicycle twelve kilometers work -> 8; the rewrite keeps 6
    rewrite = "Each morning Priya rides her bicycle twelve kilometers, keeping time with the Gaea-pulse."
    assert scoring.content_recall(source, rewrite) == pytest.approx(6 / 8)
    assert scoring.content_recall("Priya's bicycle", "priya bicycle") == 1.0


def measured(name: str, val_loss: float, heldout_nll: float = 5.0, gens: tuple[str, ...] = ("a", "b"), chrf=10.0,
             style=0.0, content=0.5) -> evaluate.Measured:
    return evaluate.Measured(name=name, val_loss=val_loss, heldout_nll=heldout_nll, generations=list(gens),
                             chrf=chrf, chrf_per_example=[chrf] * len(gens), style=style,
                             terms_per_generation=style, content=content, seconds=1.0)


def test_gates_pass_and_fail_on_the_right_side():
    models = [measured("base", 7.6, heldout_nll=7.0), measured("tuned", 4.7, heldout_nll=5.0, chrf=30, style=0.75)]
    gates = {"val_loss_drop": 2.8, "val_loss_max": 4.69, "heldout_ppl_ratio_max": 1.0, "chrf_min": 30,
             "style_min": 0.8, "content_min": 0.5}
    verdicts = {v["gate"]: v for v in evaluate.judge(gates, models)}
    assert verdicts["val_loss_drop"]["ok"] and verdicts["val_loss_drop"]["value"] == pytest.approx(2.9)
    assert not verdicts["val_loss_max"]["ok"]
    assert verdicts["heldout_ppl_ratio_max"]["ok"]  # exp(5) / exp(7) < 1: perplexity went down
    assert verdicts["chrf_min"]["ok"] and not verdicts["style_min"]["ok"] and verdicts["content_min"]["ok"]


def test_the_merged_model_must_agree_with_the_tuned_one(tmp_path):
    run = runs.Run(tmp_path)
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text(json.dumps({"dtype": "float32"}))
    tuned = measured("tuned", 4.7)
    ok = evaluate.agree([tuned, measured("merged", 4.7 * (1 + 5e-4))], {"adapter": "lora"}, run)
    assert ok is not None and ok["ok"] and ok["tolerance"] == 1e-3 and ok["identical_generations"] == 2
    bad = evaluate.agree([tuned, measured("merged", 4.7 * 1.01)], {"adapter": "lora"}, run)
    assert bad is not None and not bad["ok"]
    assert evaluate.agree([tuned, measured("merged", 4.7 * 1.01)], {"adapter": "qlora"}, run)["ok"]
    assert evaluate.agree([tuned], {"adapter": "lora"}, run) is None
    # fp32 LoRA: the merged model's greedy generations must be the tuned one's too
    other = evaluate.agree([tuned, measured("merged", 4.7, gens=("a", "c"))], {"adapter": "lora"}, run)
    assert other is not None and not other["ok"] and other["identical_generations"] == 1


def make_run(tmp_path: Path, pipeline_section: dict | None) -> runs.Run:
    run = runs.Run(tmp_path / "20260101-000000-cfg-train")
    run.output_dir.mkdir(parents=True)
    source = yaml.safe_load((ROOT / "configs" / "tiny_cpu.yaml").read_text())
    if pipeline_section is None:
        source.pop("pipeline")
    else:
        source["pipeline"] = pipeline_section
    (run.path / "source.yaml").write_text(yaml.safe_dump(source, sort_keys=False))
    runs.write_json(run.manifest_path, {"stage": "train", "status": "succeeded", "config": {"path": "cfg.yaml"}})
    return run


def test_settings_default_to_the_shipped_data_and_a_no_worse_gate(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = make_run(tmp_path, None)
    settings = evaluate.read_settings(run, run.manifest())
    assert settings["gates"] == {"val_loss_drop": 0.0} and not settings["gates_configured"]
    assert settings["style_terms"] == ROOT / "data" / "style_terms.txt"
    assert settings["heldout"] == ROOT / "data" / "general_heldout.txt"
    shipped = evaluate.read_settings(make_run(tmp_path / "b", yaml.safe_load(
        (ROOT / "configs" / "tiny_cpu.yaml").read_text())["pipeline"]), {})
    assert shipped["gates"] == {"val_loss_drop": 1.0}


@pytest.mark.parametrize("section, rule, key", [
    ({"evaluate": {"gates": {"val_los_drop": 1.0}}}, "eval-gates", "val_los_drop"),
    ({"evaluate": {"gates": {"chrf_min": "high"}}}, "eval-gates", "chrf_min"),
    ({"evaluate": {"gates": [1, 2]}}, "eval-gates", "gates"),
    ({"evaluate": {"gate": {"chrf_min": 1}}}, "eval-settings", "gate"),
    ({"evaluate": {"max_new_tokens": 0}}, "eval-settings", "max_new_tokens"),
    ({"evaluate": {"heldout": "data/nope.txt"}}, "eval-data-missing", "heldout"),
])
def test_bad_evaluate_settings_name_the_file_line_and_rule(tmp_path, monkeypatch, section, rule, key):
    monkeypatch.chdir(ROOT)
    run = make_run(tmp_path, section)
    with pytest.raises(UserError) as exc:
        evaluate.read_settings(run, run.manifest())
    (finding,) = exc.value.findings
    text = (run.path / "source.yaml").read_text().splitlines()
    assert finding.rule == rule and finding.path == "cfg.yaml"
    assert key in text[finding.line - 1], (finding, text[finding.line - 1])


@pytest.mark.parametrize("args, rule", [
    (["evaluate"], "eval-none"),
    (["evaluate", "--latest"], "eval-none"),
    (["evaluate", "nope"], "run-missing"),
    (["evaluate", "nope", "--latest"], "evaluate-which"),
])
def test_bad_evaluate_input_is_one_line_exit_2_and_writes_nothing(cli, runs_dir, args, rule):
    proc = cli(*args, "--runs-dir", str(runs_dir))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert f": {rule}: " in lines[-1], lines
    assert not runs_dir.exists() or not any(runs_dir.iterdir())
