"""report.html as people see it: opened in headless Chromium (Debian's), screenshot taken, what is shown checked.

The page is rendered by pipeline.stages.report from a result made by evaluate's own helpers on the shipped
validation rows: the base "generations" are the plain source passages, the tuned and merged ones the
reference rewrites, so the coined terms to highlight are known. The real evaluation's page is opened the
same way in tests/e2e/test_evaluate.py.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from support import ROOT

from pipeline.core import inference, runs
from pipeline.stages import evaluate, report, scoring

SIZE = (1280, 4000)


def write_report(folder: Path) -> dict:
    cfg = {"test_datasets": [{"path": str(ROOT / "data" / "processed" / "validation.jsonl")}]}
    examples = inference.examples(cfg)
    terms = evaluate.read_terms(ROOT / "data" / "style_terms.txt")
    gens = {"base": [ex.source for ex in examples], "tuned": [ex.reference for ex in examples],
            "merged": [ex.reference for ex in examples]}
    measured = [evaluate.Measured(name=n, val_loss=3.1 if n == "base" else 1.8, heldout_nll=3.6,
                                  generations=g, chrf=50.0, chrf_per_example=[50.0] * len(g), style=0.0,
                                  terms_per_generation=0.0, content=0.8, seconds=1.0) for n, g in gens.items()]
    run = runs.Run(folder / "20260101-000000-smollm2_cpu-train")
    (run.path / "merged").mkdir(parents=True)
    (run.path / "merged" / "config.json").write_text('{"dtype": "float32"}')
    result = {"run": run.name, "config": "configs/smollm2_cpu.yaml", "base_model": "pipeline://smollm2-135m-instruct",
              "adapter_type": "lora", "examples": len(examples), "models": {m.name: m.summary() for m in measured},
              "per_example": evaluate.per_example(examples, measured, terms),
              "reference": scoring.reference_scores(examples, terms),
              "gates": evaluate.judge({"style_min": 0.5}, measured),
              "merged_agreement": evaluate.agree(measured[1:], {"adapter": "lora"}, run),
              "ok": True, "runtime_s": 1.0,
              "training": {"steps": 90, "first_loss": 3.3, "final_loss": 1.2, "first_eval_loss": 3.19,
                           "eval_loss": 1.8, "trainable_params": 4884480}}
    manifest = {"finished": "2026-01-01T00:00:00+00:00", "hardware": {"accelerator": "cpu"},
                "train_manifest": {"versions": {"axolotl": "0.19.0"}, "git": {"commit": "abc", "dirty": False}}}
    report.base_vs_tuned(result, run.path / "base_vs_tuned.png")
    run.metrics_path.write_text("")
    report.loss_curves([], run.name, run.path / "loss_curves.png", result)
    (run.path / "report.html").write_text(report.page(result, manifest))
    return {"page": run.path / "report.html", "examples": examples, "terms": terms}


def test_chromium_shows_three_columns_per_example_with_the_coined_terms_highlighted(chromium, tmp_path):
    made = write_report(tmp_path)
    shown = chromium(made["page"], tmp_path, SIZE)

    assert shown.columns() == [["base", "tuned", "merged"]] * 4
    # in page order per example: the reference's terms, then base (none: the plain source), tuned, merged
    expected = ["highlighted"]  # the sentence above the examples shows what a highlight looks like
    for ex in made["examples"]:
        in_reference = [ex.reference[a:b] for a, b in scoring.term_spans(ex.reference, made["terms"])]
        expected += in_reference * 3
    assert shown.marked() == expected
    assert "skyseed" in expected and "Hollow Bloom" in expected  # a two-word term is one highlight

    with Image.open(shown.shot) as img:
        img.verify()
    with Image.open(shown.shot) as img:
        assert img.size == SIZE
        assert len(set(img.convert("RGB").getdata())) > 100  # text, tables, charts: not a blank page
    # every highlight is painted, not just in the markup; each column has its coloured top border
    assert shown.pixels(report.TERM_HIGHLIGHT) > 100 * len(expected)
    assert all(shown.pixels(report.COLORS[n]) > 4 * 200 for n in ("base", "tuned", "merged"))
