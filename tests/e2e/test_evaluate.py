"""train -> merge -> evaluate as the nox sessions run them, on the tiny CPU config, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

#: one worker takes them in turn: the others never sit waiting for the one shared evaluated run
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("evaluated")]


@pytest.fixture(scope="module")
def evaluated(tiny_evaluated) -> tuple[Path, dict]:
    """`pipeline train configs/tiny_cpu.yaml`, `pipeline merge --auto`, `pipeline evaluate --latest`
    (made once per test session: conftest's `tiny_evaluated`)."""
    return tiny_evaluated, json.loads((tiny_evaluated / "eval" / "eval.json").read_text())


def test_the_tuned_model_beats_the_base_on_validation_loss_and_the_gate_passes(evaluated):
    run, result = evaluated
    base, tuned, merged = (result["models"][n] for n in ("base", "tuned", "merged"))
    assert yaml.safe_load((run / "source.yaml").read_text())["base_model"] == "pipeline://tiny-llama"
    assert tuned["val_loss"] < base["val_loss"] - 1.0  # measured: 7.65 -> 4.71 after 72 steps
    assert result["ok"] and [g["gate"] for g in result["gates"]] == ["val_loss_drop"]
    assert result["merged_agreement"]["ok"] and abs(merged["val_loss"] - tuned["val_loss"]) < 1e-3
    assert result["training"]["steps"] == 72
    report = (run / "eval" / "report.md").read_text()
    assert report.startswith(f"# Evaluation of {run.name}: PASSED")
    row = next(line for line in report.splitlines() if line.startswith("| Validation loss (assistant turns)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[2]) < float(cells[1])  # base, tuned: the report shows it
    assert "| val_loss_drop |" in report and "| pass |" in report
    for key in ("chrf", "style", "content", "heldout_ppl"):  # every score was measured for every model
        assert all(isinstance(result["models"][n][key], float) for n in ("base", "tuned", "merged"))
    assert len(result["per_example"]) == 4 and all(ex["tuned"]["generation"] is not None
                                                   for ex in result["per_example"])


def test_the_report_pngs_open_and_show_the_curves_and_bars(evaluated):
    run, _ = evaluated
    page = (run / "eval" / "report.html").read_text()
    for name, size in (("loss_curves.png", (800, 450)), ("base_vs_tuned.png", (1500, 400))):
        assert f'<img src="{name}"' in page
        with Image.open(run / "eval" / name) as img:
            img.verify()
        with Image.open(run / "eval" / name) as img:
            assert img.size == size
            assert len(set(img.convert("RGB").getdata())) > 50, f"{name} is blank"
    manifest = json.loads((run / "eval" / "manifest.json").read_text())
    assert manifest["stage"] == "evaluate" and manifest["versions"]["axolotl"] == "0.19.0"


def test_the_real_report_in_chromium_shows_each_model_side_by_side(evaluated, chromium, tmp_path):
    from pipeline.stages import report

    run, result = evaluated
    shown = chromium(run / "eval" / "report.html", tmp_path)
    assert shown.columns() == [["base", "tuned", "merged"]] * 4
    # the tiny model coins no term, the references do: each of theirs is highlighted where it stands
    terms = [ex["reference"][a:b] for ex in result["per_example"] for a, b in ex["reference_spans"]]
    generated = [ex[n]["generation"][a:b] for ex in result["per_example"] for n in ("base", "tuned", "merged")
                 for a, b in ex[n]["spans"]]
    assert sorted(shown.marked()) == sorted(["highlighted", *terms, *generated]) and len(terms) >= 4
    assert shown.pixels(report.TERM_HIGHLIGHT) > 100 * len(terms)
    assert all(shown.pixels(c) > 500 for c in report.COLORS.values())  # the bars and the column borders


def test_runs_lists_the_run_as_trained_merged_and_evaluated(cli_here, evaluated):
    run, _ = evaluated
    proc = cli_here("runs", "--runs-dir", str(run.parent), "--format", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads(proc.stdout)
    assert (row["run"], row["config"], row["stage"], row["status"], row["steps"]) == \
        (run.name, "tiny_cpu.yaml", "train", "succeeded", 72)
    assert row["merged"] == "verified" and row["evaluated"] == "passed"
    assert 0.1 < row["peak_memory"] < 4.0 and row["peak_memory_kind"] == "rss"
    assert row["final_loss"] < 5.5
    header, _, line = cli_here("runs", "--runs-dir", str(run.parent)).stdout.splitlines()
    assert [c.strip() for c in header.split("|")[1:-1]] == ["Run", "Config", "Stage", "Status", "Steps",
                                                             "Final loss", "Peak memory", "Merged", "Evaluated"]
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[:5] == [run.name, "tiny_cpu.yaml", "train", "succeeded", "72"]
    assert cells[6].endswith("GiB RSS") and cells[7] == "verified" and cells[8].startswith("passed (")


def test_a_missed_gate_exits_1_with_one_line_per_gate(cli_here, evaluated, tmp_path):
    run, _ = evaluated
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy, symlinks=True)
    source = yaml.safe_load((copy / "source.yaml").read_text())
    source["pipeline"]["evaluate"]["gates"] = {"val_loss_drop": 100.0, "style_min": 0.0}
    (copy / "source.yaml").write_text(yaml.safe_dump(source))
    proc = cli_here("evaluate", str(copy))
    assert proc.returncode == 1, proc.stderr[-3000:]
    failed = [line for line in proc.stderr.splitlines() if "FAILED" in line]
    gates = {g["gate"]: g for g in json.loads((copy / "eval" / "eval.json").read_text())["gates"]}
    assert gates["style_min"]["ok"] and not gates["val_loss_drop"]["ok"]
    assert failed == [f"{run.name}: gate val_loss_drop FAILED: tuned validation loss at least 100.0 below the "
                      f"base's, value {gates['val_loss_drop']['value']:.4g}"]
    assert (copy / "eval" / "report.md").read_text().startswith(f"# Evaluation of {run.name}: FAILED")
    assert json.loads((copy / "manifest.json").read_text())["evaluate"]["status"] == "failed"


def test_the_manifest_after_train_merge_and_evaluate_is_what_the_schema_declares(evaluated):
    from pipeline.core import manifest

    run, _ = evaluated
    on_disk = json.loads((run / "manifest.json").read_text())
    manifest.check(on_disk)  # every field named, every value of its declared type
    assert manifest.tolerant(on_disk) == on_disk
    assert {"attempts", "adapter", "last_checkpoint", "merge", "evaluate"} <= set(on_disk)
