"""`pipeline evaluate` without models: scores, gates and their config, charts, the report, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pipeline import evaluate
from pipeline.core import runs
from pipeline.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TERMS = evaluate.read_terms(ROOT / "data" / "style_terms.txt")


def test_style_terms_count_case_sensitive_whole_words():
    assert len(TERMS) == 12 and "Verdant Choir" in TERMS and not any(t.startswith("#") for t in TERMS)
    text = "The Gaea-pulse hummed through the Verdant Choir; Loomwaters rose and a loomwater fell."
    assert evaluate.found_terms(text, TERMS) == ["Verdant Choir", "Gaea-pulse"]
    assert evaluate.found_terms("the neurolinked city", TERMS) == []
    assert evaluate.found_terms("by neurolink.", TERMS) == ["neurolink"]


def test_content_recall_counts_the_source_content_words():
    source = "Every morning Priya rides her bicycle twelve kilometers to work."
    assert evaluate.content_recall(source, source) == 1.0
    assert evaluate.content_recall(source, "the the and to her") == 0.0
    # content words: every morning priya rides bicycle twelve kilometers work -> 8; the rewrite keeps 6
    rewrite = "Each morning Priya rides her bicycle twelve kilometers, keeping time with the Gaea-pulse."
    assert evaluate.content_recall(source, rewrite) == pytest.approx(6 / 8)
    assert evaluate.content_recall("Priya's bicycle", "priya bicycle") == 1.0


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


def fake_result(run: runs.Run, merged: bool = True) -> dict:
    models = {"base": {"val_loss": 7.65, "val_ppl": 2100.0, "heldout_ppl": 2085.0, "chrf": 12.7, "style": 0.0,
                       "terms_per_generation": 0.0, "content": 0.1},
              "tuned": {"val_loss": 4.71, "val_ppl": 111.0, "heldout_ppl": 135.0, "chrf": 20.0, "style": 0.5,
                        "terms_per_generation": 0.5, "content": 0.6}}
    if merged:
        models["merged"] = dict(models["tuned"])
    per = [{"source": "Felix saw a comet.", "reference": "Felix saw a skyseed.",
            **{n: {"generation": f"{n} text | with a pipe", "chrf": 10.0, "terms": ["skyseed"] if n != "base" else [],
                   "content": 0.5} for n in models}}]
    return {"run": run.name, "config": "configs/tiny_cpu.yaml", "base_model": "/m", "adapter_type": "lora",
            "examples": 1, "models": models, "per_example": per, "reference": {"style": 1.0, "content": 0.84},
            "gates": [{"gate": "val_loss_drop", "limit": 1.0, "value": 2.94, "ok": True,
                       "meaning": "tuned validation loss at least 1.0 below the base's"}],
            "merged_agreement": {"relative_val_loss_diff": 2e-8, "tolerance": 1e-3, "ok": True,
                                 "identical_generations": 1, "generations": 1} if merged else None,
            "ok": True, "runtime_s": 3.0,
            "training": {"steps": 72, "first_loss": 7.6, "final_loss": 4.6, "first_eval_loss": 7.65,
                         "eval_loss": 4.72, "trainable_params": 35584}}


def test_charts_are_pngs_of_the_stated_size_with_the_plotted_colours(tmp_path):
    run = runs.Run(tmp_path / "r")
    run.path.mkdir()
    records = [{"kind": "eval", "step": 0, "eval_loss": 7.65}]
    records += [{"kind": "train", "step": s, "loss": 7.6 - s * 0.04} for s in range(1, 73)]
    records += [{"kind": "eval", "step": 72, "eval_loss": 4.72}]
    run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = fake_result(run)
    evaluate.loss_curves(run, tmp_path / "loss.png", result)
    evaluate.base_vs_tuned(result, tmp_path / "bars.png")

    def rgb(hex_colour: str) -> tuple[int, int, int]:
        return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]

    with Image.open(tmp_path / "loss.png") as img:
        assert img.size == (800, 450)
        colours = set(img.convert("RGB").getdata())
        assert rgb(evaluate.COLORS["tuned"]) in colours  # the training-loss line
        assert len(colours) > 50  # text, axes, lines: not a blank canvas
    with Image.open(tmp_path / "bars.png") as img:
        assert img.size == (1500, 400)
        pixels = list(img.convert("RGB").getdata())
        counts = {n: pixels.count(rgb(c)) for n, c in evaluate.COLORS.items()}
        assert all(n > 500 for n in counts.values()), counts  # a solid bar of each model
        # the validation-loss panel is the first fifth: its tuned bar is shorter than its base bar
        width = img.size[0]
        first = img.convert("RGB").crop((0, 0, width // 5, img.size[1]))
        heights = {n: sum(1 for y in range(first.size[1]) if rgb(evaluate.COLORS[n]) in
                          {first.getpixel((x, y)) for x in range(first.size[0])}) for n in ("base", "tuned")}
        assert heights["tuned"] < heights["base"] * 0.7, heights


def test_the_report_has_the_gates_tables_charts_and_escapes_text(tmp_path):
    run = runs.Run(tmp_path / "r")
    result = fake_result(run)
    manifest = {"finished": "2026-01-01T00:00:00+00:00", "hardware": {"accelerator": "cpu"},
                "train_manifest": {"versions": {"axolotl": "0.19.0"}, "git": {"commit": "abc", "dirty": False}}}
    md = evaluate.markdown(result, manifest)
    assert md.startswith("# Evaluation of r: PASSED")
    assert "| Validation loss (assistant turns) | 7.6500 | 4.7100 | 4.7100 | - |" in md
    assert "](base_vs_tuned.png)" in md and "](loss_curves.png)" in md
    assert "tuned text \\| with a pipe" in md
    page = evaluate.page(result, manifest)
    assert '<img src="base_vs_tuned.png"' in page and '<img src="loss_curves.png"' in page
    assert "<td>val_loss_drop</td>" in page and "&quot;axolotl&quot;: &quot;0.19.0&quot;" in page


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
