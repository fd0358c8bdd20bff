"""How an evaluation is shown: report.md, report.html, the PNG charts and the terminal summary.

`pipeline evaluate` measures (pipeline.stages.evaluate); this module only renders what it measured, so a
change of presentation never touches a number. Every function takes the evaluation's result dict (the
same as eval.json) and the evaluation's manifest.
"""

from __future__ import annotations

import html
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.core.errors import printable

COLORS = {"base": "#8c8c8c", "tuned": "#2a7ab8", "merged": "#e0873a"}
#: the background of a highlighted coined term in report.html
TERM_HIGHLIGHT = "#ffd23f"


# --- charts -------------------------------------------------------------------------------------------------

def loss_curves(records: list[dict[str, Any]], run_name: str, path: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = {r["step"]: r["loss"] for r in records if r.get("kind") == "train" and r.get("loss") is not None}
    evals = {r["step"]: r["eval_loss"] for r in records if r.get("kind") == "eval" and r.get("eval_loss") is not None}
    all_tokens = bool(result.get("train_on_inputs"))  # axolotl's losses then cover the prompts too
    every = ", every token" if all_tokens else ""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    ax.plot(list(train), list(train.values()), color=COLORS["tuned"], linewidth=1.2,
            label=f"training loss (per step{every})")
    if evals:
        ax.plot(list(evals), list(evals.values()), "o--", color="#b8342a", label=f"validation loss (axolotl{every})")
    ax.axhline(result["models"]["base"]["val_loss"], color=COLORS["base"], linestyle=":",
               label="base model validation loss (this evaluation)" + (", rewrites only" if all_tokens else ""))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(f"Loss curves: {run_name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


BARS = [("val_loss", "validation loss\n(lower is better)"), ("heldout_ppl", "held-out perplexity\n(lower is better)"),
        ("chrf", "chrF vs reference\n(higher is better)"), ("style", "style: share with a coined term\n(higher)"),
        ("content", "content-word recall\n(higher is better)")]


def base_vs_tuned(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = result["models"]
    names = list(models)
    fig, axes = plt.subplots(1, len(BARS), figsize=(15, 4), dpi=100)
    for ax, (key, label) in zip(axes, BARS, strict=True):
        values = [models[n][key] for n in names]
        bars = ax.bar(names, values, color=[COLORS[n] for n in names])
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=9)
        ax.set_title(label, fontsize=10)
        shares = key in ("style", "content")  # fractions: one scale, so zero reads as zero
        ax.set_ylim(0, 1.12 if shares else max([*values, 1e-9]) * 1.18)
    fig.suptitle(f"Base vs tuned{' vs merged' if 'merged' in models else ''}: {result['run']}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- the report ---------------------------------------------------------------------------------------------

def summary_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    models = result["models"]
    names = list(models)
    header = ["Metric", *names, "Reference rewrites"]
    ref = result["reference"]
    rows = [
        ["Validation loss (assistant turns)", *[f"{models[n]['val_loss']:.4f}" for n in names], "-"],
        ["Validation perplexity", *[f"{models[n]['val_ppl']:.2f}" for n in names], "-"],
        ["chrF vs reference (corpus)", *[f"{models[n]['chrf']:.2f}" for n in names], "100"],
        ["Style: generations with a coined term", *[f"{models[n]['style']:.0%}" for n in names],
         f"{ref['style']:.0%}"],
        ["Style: coined terms per generation", *[f"{models[n]['terms_per_generation']:.2f}" for n in names], "-"],
        ["Content-word recall vs source", *[f"{models[n]['content']:.2f}" for n in names], f"{ref['content']:.2f}"],
        ["Held-out perplexity (retention)", *[f"{models[n]['heldout_ppl']:.2f}" for n in names], "-"],
    ]
    return header, rows


def gate_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = [[g["gate"], g["meaning"], f"{g['value']:.4g}", "pass" if g["ok"] else "FAIL"] for g in result["gates"]]
    a = result["merged_agreement"]
    if a is not None:
        same = "identical" if a.get("generations_must_match") else "compared"
        rows.append(["merged agrees with tuned",
                     f"validation loss within {a['tolerance']:g} relative; greedy generations {same}",
                     f"{a['relative_val_loss_diff']:.2g}; {a['identical_generations']}/{a['generations']} "
                     f"generations identical", "pass" if a["ok"] else "FAIL"])
    return ["Gate", "Meaning", "Value", "Result"], rows


def example_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    names = list(result["models"])
    header = ["#", "Source passage", "Reference rewrite",
              *[f"{n}: generation (chrF, terms, content)" for n in names]]
    rows = []
    for i, ex in enumerate(result["per_example"], 1):
        cells = [str(i), ex["source"], highlight(ex["reference"], ex["reference_spans"], "**", "**")]
        for n in names:
            m = ex[n]
            cells.append(f"{highlight(m['generation'], m['spans'], '**', '**')} (chrF {m['chrf']:.1f}; "
                         f"terms: {', '.join(m['terms']) or 'none'}; content {m['content']:.2f})")
        rows.append(cells)
    return header, rows


def highlight(text: str, spans: list[list[int]], start: str, end: str,
              escape: Callable[[str], str] = str) -> str:
    """`text` with each coined-term span wrapped in start/end; the rest passed through `escape`."""
    out, at = [], 0
    for a, b in spans:
        out += [escape(text[at:a]), start, escape(text[a:b]), end]
        at = b
    out.append(escape(text[at:]))
    return "".join(out)


def _marked(text: str, spans: list[list[int]]) -> str:
    return highlight(text, spans, '<mark class="term">', "</mark>", html.escape)


def side_by_side(result: dict[str, Any]) -> str:
    """Per example: the source and the reference, then one column per model with its generation."""
    names = list(result["models"])
    e = html.escape
    blocks = []
    for i, ex in enumerate(result["per_example"], 1):
        columns = []
        for n in names:
            m = ex[n]
            terms = ", ".join(m["terms"]) or "none"
            columns.append(f'<div class="model {e(n)}"><h4>{e(n)}</h4><p class="generation">'
                           f'{_marked(m["generation"], m["spans"])}</p><p class="scores">chrF {m["chrf"]:.1f} · '
                           f'content {m["content"]:.2f} · coined terms: {e(terms)}</p></div>')
        blocks.append(f'<section class="example" id="example-{i}"><h3>Example {i}</h3>'
                      f'<p class="source"><b>Source:</b> {e(ex["source"])}</p>'
                      f'<p class="reference"><b>Reference rewrite:</b> '
                      f'{_marked(ex["reference"], ex["reference_spans"])}</p>'
                      f'<div class="columns" style="grid-template-columns: repeat({len(names)}, 1fr)">'
                      f'{"".join(columns)}</div></section>')
    return "".join(blocks)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def _facts(result: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    t = result["training"]
    tm = manifest["train_manifest"]
    versions = tm.get("versions") or {}
    git = tm.get("git") or {}

    def num(x: Any, fmt: str = "{:.4f}") -> str:
        return "-" if x is None else fmt.format(x)

    return [
        f"Run: {result['run']} (config {result['config']}, adapter {result['adapter_type']})",
        f"Base model: {result['base_model']}",
        f"Training: {t['steps']} steps; training loss {num(t['first_loss'])} -> {num(t['final_loss'])}; "
        f"axolotl's validation loss {num(t['first_eval_loss'])} -> {num(t['eval_loss'])}; "
        f"{num(t['trainable_params'], '{:,}')} trainable parameters",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        f"Project revision: {git.get('commit')}{' (uncommitted changes)' if git.get('dirty') else ''}",
        f"Evaluated {manifest['finished']} on {manifest['hardware'].get('accelerator')} in {result['runtime_s']:.0f}s; "
        f"{result['examples']} validation examples",
    ]


DEFINITIONS = [
    "Validation loss: mean next-token NLL (nats) over the assistant turns of the validation set, all tokens "
    "weighted equally (axolotl's own eval_loss averages per batch, so it can differ slightly).",
    "Generations are greedy. chrF is sacrebleu's character n-gram F-score against the reference rewrite.",
    "Style: a generation counts when it uses at least one coined term of the style (case as written, whole "
    "words).",
    "Content-word recall: the share of the source passage's words, stop words left out, that the generation "
    "repeats. Copying the source scores 1.0, so read it with the style score; the reference rewrites' recall "
    "is the level a faithful rewrite reaches.",
    "Retention: perplexity on data/general_heldout.txt, plain general English the adapter never saw.",
    "The tuned model is the base plus the adapter, loaded as training loaded it (4-bit for QLoRA); merged is "
    "RUN/merged from `pipeline merge`.",
]


def loss_caption(result: dict[str, Any]) -> str:
    text = ("Training loss per optimizer step and axolotl's validation loss at each evaluation (from the run's "
            "metrics.jsonl); the dotted line is the base model's validation loss measured here.")
    if result.get("train_on_inputs"):
        # the dotted line and the tables score the rewrites alone, whatever the training masked
        text += (" This run trained on the prompts too (train_on_inputs), so its training and axolotl's validation "
                 "losses cover every token of a row and sit on another scale than the dotted line, which, like "
                 "the tables, covers the assistant turns alone.")
    return text


def markdown(result: dict[str, Any], manifest: dict[str, Any]) -> str:
    verdict = "PASSED" if result["ok"] else "FAILED"
    parts = [f"# Evaluation of {result['run']}: {verdict}", "",
             *[f"- {line}" for line in _facts(result, manifest)], "",
             "## Gates", "", _md_table(*gate_rows(result)), "",
             "## Base vs tuned", "", _md_table(*summary_rows(result)), "",
             "![Base vs tuned: validation loss, held-out perplexity, chrF, style and content, one panel each]"
             "(base_vs_tuned.png)", "",
             "*Base vs tuned (and merged): validation loss, held-out perplexity, chrF, style share and "
             "content-word recall, one panel each.*", "",
             "## Loss curves", "",
             "![Training loss per step and validation loss at each evaluation](loss_curves.png)", "",
             f"*{loss_caption(result)}*", "",
             "## Per example", "", _md_table(*example_rows(result)), "",
             "## How the numbers are made", "", *[f"- {d}" for d in DEFINITIONS], "",
             "Everything above is in eval.json; what produced it is in manifest.json.", ""]
    return "\n".join(parts)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(result: dict[str, Any], manifest: dict[str, Any]) -> str:
    verdict = "PASSED" if result["ok"] else "FAILED"
    e = html.escape
    facts = "".join(f"<li>{e(line)}</li>" for line in _facts(result, manifest))
    defs = "".join(f"<li>{e(d)}</li>" for d in DEFINITIONS)
    manifest_text = e(json.dumps(manifest, indent=2, default=str))
    model_css = " ".join(f".model.{n} {{ border-top-color: {c}; }}" for n, c in COLORS.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation of {e(result['run'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ border: 1px solid #ccc; padding: 4px 8px;
vertical-align: top; text-align: left; }} th {{ background: #f3f3f3; }} img {{ max-width: 100%; }}
.passed {{ color: #1a7f37; }} .failed {{ color: #cf222e; }} figcaption {{ font-style: italic; }}
pre {{ background: #f6f8fa; padding: 1em; overflow: auto; font-size: 12px; }}
.example {{ border-top: 1px solid #ddd; padding-top: 0.5em; }} .columns {{ display: grid; gap: 1em; }}
.model {{ border: 1px solid #ccc; border-top: 4px solid; padding: 0 0.8em; }} .scores {{ color: #555;
font-size: 0.85em; }} mark.term {{ background: {TERM_HIGHLIGHT}; padding: 0 2px; border-radius: 2px; white-space: nowrap; }}
{model_css}
</style></head><body>
<h1>Evaluation of {e(result['run'])}: <span class="{verdict.lower()}">{verdict}</span></h1>
<ul>{facts}</ul>
<h2>Gates</h2>{_html_table(*gate_rows(result))}
<h2>Base vs tuned</h2>{_html_table(*summary_rows(result))}
<figure><img src="base_vs_tuned.png" alt="Base vs tuned bars">
<figcaption>Base vs tuned (and merged): validation loss, held-out perplexity, chrF, style share and
content-word recall, one panel each.</figcaption></figure>
<h2>Loss curves</h2>
<figure><img src="loss_curves.png" alt="Loss curves">
<figcaption>{html.escape(loss_caption(result))}</figcaption></figure>
<h2>Generations side by side</h2>
<p>Greedy generations for each validation prompt; the style's coined terms are <mark class="term">highlighted</mark>.</p>
{side_by_side(result)}
<h2>How the numbers are made</h2><ul>{defs}</ul>
<h2>Manifest</h2><pre>{manifest_text}</pre>
</body></html>
"""


def print_summary(result: dict[str, Any], target: Path) -> None:
    header, rows = summary_rows(result)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    for g in gate_rows(result)[1]:
        state = "ok" if g[3] == "pass" else "FAILED"
        line = f"{result['run']}: gate {g[0]} {state}: {g[1]}, value {g[2]}"
        print(line, file=sys.stderr if state == "FAILED" else sys.stdout)
    print(printable(f"report: {target / 'report.md'} and {target / 'report.html'}"))
