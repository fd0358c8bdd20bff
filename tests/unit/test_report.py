"""The evaluation report as people see it: charts with the plotted colours, markdown and HTML tables."""

from __future__ import annotations

import json

from PIL import Image

from pipeline.core import runs
from pipeline.stages import report


def fake_result(run: runs.Run, merged: bool = True) -> dict:
    models = {"base": {"val_loss": 7.65, "val_ppl": 2100.0, "heldout_ppl": 2085.0, "chrf": 12.7, "style": 0.0,
                       "terms_per_generation": 0.0, "content": 0.1},
              "tuned": {"val_loss": 4.71, "val_ppl": 111.0, "heldout_ppl": 135.0, "chrf": 20.0, "style": 0.5,
                        "terms_per_generation": 0.5, "content": 0.6}}
    if merged:
        models["merged"] = dict(models["tuned"])
    per = [{"source": "Felix saw a comet.", "reference": "Felix saw a skyseed.", "reference_spans": [[12, 19]],
            **{n: {"generation": f"{n} text | with a pipe" + (" <skyseed>" if n != "base" else ""), "chrf": 10.0,
                   "terms": ["skyseed"] if n != "base" else [],
                   "spans": [[len(n) + 21, len(n) + 28]] if n != "base" else [], "content": 0.5} for n in models}}]
    return {"run": run.name, "config": "configs/tiny_cpu.yaml", "base_model": "/m", "adapter_type": "lora",
            "examples": 1, "models": models, "per_example": per, "reference": {"style": 1.0, "content": 0.84},
            "gates": [{"gate": "val_loss_drop", "limit": 1.0, "value": 2.94, "ok": True,
                       "meaning": "tuned validation loss at least 1.0 below the base's"}],
            "merged_agreement": {"relative_val_loss_diff": 2e-8, "tolerance": 1e-3, "ok": True,
                                 "identical_generations": 1, "generations": 1,
                                 "generations_must_match": True} if merged else None,
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
    report.loss_curves(run.metrics(), run.name, tmp_path / "loss.png", result)
    report.base_vs_tuned(result, tmp_path / "bars.png")

    def rgb(hex_colour: str) -> tuple[int, int, int]:
        return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]

    with Image.open(tmp_path / "loss.png") as img:
        assert img.size == (800, 450)
        colours = set(img.convert("RGB").getdata())
        assert rgb(report.COLORS["tuned"]) in colours  # the training-loss line
        assert len(colours) > 50  # text, axes, lines: not a blank canvas
    with Image.open(tmp_path / "bars.png") as img:
        assert img.size == (1500, 400)
        pixels = list(img.convert("RGB").getdata())
        counts = {n: pixels.count(rgb(c)) for n, c in report.COLORS.items()}
        assert all(n > 500 for n in counts.values()), counts  # a solid bar of each model
        # the validation-loss panel is the first fifth: its tuned bar is shorter than its base bar
        width = img.size[0]
        first = img.convert("RGB").crop((0, 0, width // 5, img.size[1]))
        heights = {n: sum(1 for y in range(first.size[1]) if rgb(report.COLORS[n]) in
                          {first.getpixel((x, y)) for x in range(first.size[0])}) for n in ("base", "tuned")}
        assert heights["tuned"] < heights["base"] * 0.7, heights


def test_the_report_has_the_gates_tables_charts_and_escapes_text(tmp_path):
    run = runs.Run(tmp_path / "r")
    result = fake_result(run)
    manifest = {"finished": "2026-01-01T00:00:00+00:00", "hardware": {"accelerator": "cpu"},
                "train_manifest": {"versions": {"axolotl": "0.19.0"}, "git": {"commit": "abc", "dirty": False}}}
    md = report.markdown(result, manifest)
    assert md.startswith("# Evaluation of r: PASSED")
    assert "| Validation loss (assistant turns) | 7.6500 | 4.7100 | 4.7100 | - |" in md
    assert "](base_vs_tuned.png)" in md and "](loss_curves.png)" in md
    assert "tuned text \\| with a pipe <**skyseed**>" in md and "Felix saw a **skyseed**." in md
    assert "| merged agrees with tuned | validation loss within 0.001 relative; greedy generations identical | " \
           "2e-08; 1/1 generations identical | pass |" in md
    page = report.page(result, manifest)
    assert '<img src="base_vs_tuned.png"' in page and '<img src="loss_curves.png"' in page
    assert "<td>val_loss_drop</td>" in page and "&quot;axolotl&quot;: &quot;0.19.0&quot;" in page
    # side by side: a column per model, the coined term marked, the text around it escaped
    assert page.count('<div class="model ') == 3
    assert 'tuned text | with a pipe &lt;<mark class="term">skyseed</mark>&gt;' in page
    assert 'Felix saw a <mark class="term">skyseed</mark>.' in page


def test_loss_curves_say_when_axolotl_losses_cover_the_prompts_too(tmp_path):
    run = runs.Run(tmp_path / "r")
    manifest = {"finished": "2026-01-01T00:00:00+00:00", "hardware": {"accelerator": "cpu"},
                "train_manifest": {"versions": {}, "git": {}}}
    note = "trained on the prompts too (train_on_inputs)"
    masked = fake_result(run)
    assert note not in report.markdown(masked, manifest) and note not in report.page(masked, manifest)
    both = {**masked, "train_on_inputs": True}
    assert note in report.markdown(both, manifest) and note in report.page(both, manifest)
