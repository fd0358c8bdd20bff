"""`pipeline evaluate`: the style-transfer benchmark of a trained run, base model vs tuned (and merged).

    pipeline evaluate [RUN]       RUN: a run name or path; without it (or with --latest) the newest
                                  finished training run

For each model (the base; the tuned model, i.e. the base plus the run's adapter, 4-bit as QLoRA trained
it; and the merged model when `RUN/merged/` exists) on the run's validation set:

- validation loss and perplexity: mean next-token NLL over the assistant turns (the tokens a
  `chat_template` dataset trains on), token-weighted over all examples;
- a greedy generation per validation prompt, scored with chrF (sacrebleu; corpus-level, and per example)
  against the reference rewrite;
- style: the share of generations that use at least one of the style's coined terms
  (`data/style_terms.txt`, matched case-sensitively as whole words), and the terms per generation;
- content preservation: recall of the source passage's content words (lower-cased words that are not
  stop words: names, numbers, nouns, verbs) in the generation. Copying the source scores 1.0, which is
  why it is read together with the style score; the reference rewrites' own recall is shown beside it;
- retention: perplexity on `data/general_heldout.txt` (plain general English), before and after tuning.

The merged model must agree with the tuned one (validation loss within 1e-3 relative for LoRA in fp32,
1e-2 in bf16/fp16, 2e-2 for QLoRA, whose merge is NF4-round-tripped; see `pipeline merge`), and for LoRA
in fp32 its greedy generations must be the tuned model's, word for word.

Gates, in the config's `pipeline: evaluate: gates:` section (the run's own copy, source.yaml), each a
number; a missed gate, or a merged model that disagrees, exits 1:

    val_loss_drop: 0.5        # tuned validation loss at least this far (nats) below the base's
    val_loss_max: 3.0         # tuned validation loss at most this
    heldout_ppl_ratio_max: 1.5  # tuned / base perplexity on the held-out text at most this
    chrf_min: 20              # tuned corpus chrF at least this
    style_min: 0.5            # share of tuned generations using a coined term at least this
    content_min: 0.5          # tuned content-word recall at least this

With no gates configured, `val_loss_drop: 0` applies: tuning must not make the validation loss worse.
Other settings of `pipeline: evaluate:`: `style_terms`, `heldout` (paths), `max_new_tokens`.

It writes `RUN/eval/`: report.md, report.html (base, tuned and merged generations side by side per
example, coined terms highlighted), loss_curves.png, base_vs_tuned.png, eval.json (every number, and
where each coined term sits in each text) and manifest.json (what produced the report), through a
temporary folder renamed into place.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.core import config, inference, provenance, run_outputs, runs, safeio, section, staging
from pipeline.core.errors import ExitCode, UserError, printable
from pipeline.core.proc import sigterm_as_interrupt
from pipeline.core.section import GATES
from pipeline.stages import report
from pipeline.stages.scoring import content_recall, found_terms, reference_scores, term_spans

MAX_TOKENS = 1024
#: merged vs tuned validation loss, relative, by adapter type and dtype
AGREEMENT = {"lora-float32": 1e-3, "lora": 1e-2, "qlora": 2e-2}
def main(run_ref: str | None, *, runs_dir: Path) -> int:
    """Evaluate RUN (default: the newest finished training run) and write RUN/eval/.

    run_ref: a run name under `runs_dir`, or a run folder path; None for the newest
    runs_dir: where run folders are
    """
    run = pick(runs_dir, run_ref)
    run.take_lock()  # one writer: a merge or another evaluation of this run waits its turn
    staging.clean(run.path, TMP_PREFIX)  # a killed evaluation's folder goes even if this one is refused
    if (why := not_evaluable(run)) is not None:  # it may have changed while we waited to look
        raise UserError.at(str(run.path), None, "eval-not-ready", why)
    cfg = runs.run_config(run)
    inference.offline_for(cfg["base_model"])  # before transformers is imported
    manifest = run.manifest()
    settings = read_settings(run, manifest)  # bad gates: exit 2 before any model is loaded
    examples = inference.examples(cfg)
    if not examples:
        raise UserError.at(str(run.path / "config.yaml"), None, "eval-no-examples",
                           "the run's config names no validation rows (test_datasets) to evaluate on")
    terms = read_terms(settings["style_terms"])
    heldout = read_heldout(settings["heldout"])

    sigterm_as_interrupt()  # stop like Ctrl-C: the temporary folder is removed
    stage = staging.Staging(run.path / "eval", TMP_PREFIX)
    started = time.perf_counter()
    try:
        stage.open()
        run.update_manifest(evaluate={"status": "running", "started": runs.now(), "pid": os.getpid()})
    except OSError as exc:
        stage.discard()
        raise runs.unwritable(run.path, exc) from None
    try:
        with stage:
            models = measure_all(run, cfg, examples, heldout, terms, settings)
            verdicts = judge(settings["gates"], models)
            agreement = agree(models, cfg, run)
            result = {
                "run": run.name,
                "config": manifest.get("config", {}).get("path"),
                "base_model": cfg.get("base_model"),
                "adapter_type": cfg.get("adapter"),
                # axolotl's losses then cover the prompts as well; the report says so beside its curves
                "train_on_inputs": bool(cfg.get("train_on_inputs")),
                "examples": len(examples),
                "models": {m.name: m.summary() for m in models},
                "per_example": per_example(examples, models, terms),
                "reference": reference_scores(examples, terms),
                "gates": verdicts,
                "merged_agreement": agreement,
                "ok": all(v["ok"] for v in verdicts) and (agreement is None or agreement["ok"]),
                "training": {k: manifest.get("summary", {}).get(k) for k in
                             ("steps", "first_loss", "final_loss", "first_eval_loss", "eval_loss", "trainable_params",
                              "train_runtime_s", "peak_rss_gib", "peak_vram_allocated_gib")},
                "settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()},
                "runtime_s": round(time.perf_counter() - started, 2),
            }
            report.loss_curves(run.metrics(), run.name, stage.path / "loss_curves.png", result)
            report.base_vs_tuned(result, stage.path / "base_vs_tuned.png")
            runs.write_json(stage.path / "eval.json", result)
            produced = provenance.record(manifest.get("config", {}).get("path"))  # git: the trained config's folder
            eval_manifest = {
                "run": run.name, "stage": "evaluate", "finished": runs.now(), "command": sys.argv,
                "versions": produced["versions"], "hardware": produced["hardware"], "git": produced["git"],
                "data": {str(p): provenance.sha256_file(p) for p in (settings["style_terms"], settings["heldout"])},
                "validation": {str(p): provenance.sha256_file(p) for p in validation_files(cfg)},
                "train_manifest": {k: manifest.get(k) for k in ("run", "status", "started", "finished", "config",
                                                               "git", "versions")},
            }
            runs.write_json(stage.path / "manifest.json", eval_manifest)
            runs.write_atomic(stage.path / "report.md", report.markdown(result, eval_manifest))
            runs.write_atomic(stage.path / "report.html", report.page(result, eval_manifest))
            stage.commit()  # an earlier RUN/eval/ is replaced
    except KeyboardInterrupt:
        _record(run, {"status": "interrupted", "finished": runs.now()})
        print(printable(f"{run.name}: evaluation interrupted"), file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except OSError as exc:  # a full or read-only disk while writing the report
        _record(run, {"status": "failed", "finished": runs.now()})
        print(printable(f"{run.path}: eval-unwritable: cannot write the report ({exc.strerror or exc}); an earlier "
              f"RUN/eval/ is kept as it was"), file=sys.stderr)
        return int(ExitCode.ENGINE)
    except BaseException:
        _record(run, {"status": "failed", "finished": runs.now()})
        raise

    status = "passed" if result["ok"] else "failed"
    _record(run, {"status": status, "finished": runs.now(), "report": str(stage.target / "report.md"),
                                  "gates": verdicts, "merged_agreement": agreement,
                                  "summary": result["models"]})
    report.print_summary(result, stage.target)
    return int(ExitCode.OK if result["ok"] else ExitCode.FAILED)


TMP_PREFIX = ".eval-"


def _record(run: runs.Run, entry: dict[str, Any]) -> None:
    """The manifest's `evaluate` entry; a disk that cannot take it is said, not raised over the result."""
    try:
        run.update_manifest(evaluate=entry)
    except OSError as exc:
        print(printable(f"warning: {run.manifest_path}: cannot record the evaluation ({exc.strerror})"), file=sys.stderr)


# --- which run, which settings ------------------------------------------------------------------------------

def pick(runs_dir: Path, ref: str | None) -> runs.Run:
    """The run named (judged by main once it holds the lock), or the newest one that can be evaluated."""
    if ref:
        return runs.find(runs_dir, ref)
    if (newest := runs.newest(runs_dir, not_evaluable)) is not None:
        return newest
    raise UserError.at(str(runs_dir), None, "eval-none",
                       "no finished training run here to evaluate; train one with `pipeline train`")


def not_evaluable(run: runs.Run) -> str | None:
    m = run.manifest()
    if m.get("stage") != "train":
        return f"{run.name} is a {m.get('stage')} run; evaluate takes a training run"
    if m.get("status") != "succeeded":
        return f"{run.name} did not finish training (status {m.get('status')})"
    if (why := run_outputs.adapter_problem(run.output_dir)) is not None:
        return f"{run.name}: {why}"
    if (why := run_outputs.file_problem(run.metrics_path)) is not None:  # its loss curves are drawn from it
        return f"{run.name}: {why}"
    return run_outputs.merged_problem(run.path)


def read_settings(run: runs.Run, manifest: dict[str, Any]) -> dict[str, Any]:
    """The `pipeline: evaluate:` section of the run's copy of the user's config, with the `--set` values the
    run was trained with, checked by the section's owner (`pipeline.core.section`)."""
    from pipeline import checks

    source = run.path / "source.yaml"
    shown = str(manifest.get("config", {}).get("path") or source)  # the same bytes, so the same lines
    loaded = checks.with_overrides(config.load(source), manifest.get("overrides") or {})
    return section.evaluate_settings(replace(loaded, path=Path(shown)), shown)


def _text(path: Path) -> str:
    try:
        return safeio.read_text(path, "eval-data", safeio.data_bytes(), what=path.name)
    except safeio.BadFile as exc:
        raise exc.user_error(path) from None


def read_terms(path: Path) -> list[str]:
    return [t.strip() for t in _text(path).splitlines() if t.strip() and not t.lstrip().startswith("#")]


def read_heldout(path: Path) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", _text(path)) if p.strip()]


def validation_files(cfg: dict[str, Any]) -> list[Path]:
    entries = cfg.get("test_datasets") or cfg.get("datasets") or []
    return [Path(e["path"]) for e in entries if isinstance(e, dict) and Path(str(e.get("path"))).is_file()]


# --- measuring ----------------------------------------------------------------------------------------------

@dataclass
class Measured:
    name: str
    val_loss: float
    heldout_nll: float
    generations: list[str]
    chrf: float
    chrf_per_example: list[float]
    style: float
    terms_per_generation: float
    content: float
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "val_loss": self.val_loss, "val_ppl": math.exp(self.val_loss),
            "heldout_ppl": math.exp(self.heldout_nll), "chrf": self.chrf, "style": self.style,
            "terms_per_generation": self.terms_per_generation, "content": self.content,
            "seconds": round(self.seconds, 2), **self.extra,
        }


def measure_all(run: runs.Run, cfg: dict[str, Any], examples: list[inference.Example], heldout: list[str],
                terms: list[str], settings: dict[str, Any]) -> list[Measured]:
    base, adapter = cfg["base_model"], run.output_dir
    tok = inference.tokenizer(adapter)
    qlora = cfg.get("adapter") == "qlora"
    train_dtype = inference.training_dtype(cfg)
    merged = run.path / "merged"
    plans: list[tuple[str, dict[str, Any]]] = [
        ("base", {"path": base, "dtype": train_dtype}),
        ("tuned", {"path": base, "adapter": adapter, "dtype": train_dtype, "four_bit": {} if qlora else None}),
    ]
    if (merged / "config.json").is_file():
        plans.append(("merged", {"path": merged, "dtype": _merged_dtype(merged)}))
    out = []
    for name, how in plans:
        print(printable(f"==> evaluate: {name} model ({len(examples)} validation examples, "
              f"{len(heldout)} held-out paragraphs)"), file=sys.stderr)
        started = time.perf_counter()
        model = inference.load(how["path"], adapter=how.get("adapter"), dtype=how["dtype"],
                               four_bit=how.get("four_bit"))
        measured = measure(name, model, tok, examples, heldout, terms, settings.get("max_new_tokens"))
        measured.seconds = time.perf_counter() - started
        del model
        inference.release()
        out.append(measured)
    return out


def measure(name: str, model: Any, tok: Any, examples: list[inference.Example], heldout: list[str],
            terms: list[str], max_new_tokens: int | None) -> Measured:
    import torch
    from sacrebleu.metrics import CHRF

    dev = next(model.parameters()).device
    total, count = 0.0, 0
    gens = []
    with torch.no_grad():
        for ex in examples:
            ids, mask = inference.encode(tok, ex.messages, MAX_TOKENS)
            nll, n = _nll(model, ids.to(dev), mask.to(dev))
            total, count = total + nll, count + n
            gens.append(generate(model, tok, ex, max_new_tokens))
        h_total, h_count = 0.0, 0
        for paragraph in heldout:
            ids = tok(paragraph, add_special_tokens=False)["input_ids"][: MAX_TOKENS - 1]
            if tok.bos_token_id is not None:
                ids = [tok.bos_token_id, *ids]
            t = torch.tensor([ids], device=dev)
            nll, n = _nll(model, t, torch.ones_like(t))
            h_total, h_count = h_total + nll, h_count + n
    chrf = CHRF()
    refs = [ex.reference for ex in examples]
    per = [chrf.sentence_score(g, [r]).score for g, r in zip(gens, refs, strict=True)]
    counts = [len(found_terms(g, terms)) for g in gens]
    return Measured(
        name=name, val_loss=total / max(count, 1), heldout_nll=h_total / max(h_count, 1), generations=gens,
        chrf=chrf.corpus_score(gens, [refs]).score, chrf_per_example=per,
        style=sum(c > 0 for c in counts) / len(gens), terms_per_generation=sum(counts) / len(gens),
        content=sum(content_recall(ex.source, g) for ex, g in zip(examples, gens, strict=True)) / len(gens),
        seconds=0.0)


def _nll(model: Any, ids: Any, mask: Any) -> tuple[float, int]:
    """Summed next-token NLL over the tokens `mask` marks (a token is scored when it is the target)."""
    import torch

    logits = model(input_ids=ids).logits.float()
    logp = torch.log_softmax(logits[0, :-1], dim=-1)
    nll = -logp.gather(1, ids[0, 1:, None])[:, 0]
    keep = mask[0, 1:].bool()
    return float(nll[keep].sum()), int(keep.sum())


def generate(model: Any, tok: Any, ex: inference.Example, max_new_tokens: int | None) -> str:
    ids = inference.prompt_ids(tok, ex.prompt).to(next(model.parameters()).device)
    budget = max_new_tokens or min(512, int(1.5 * len(tok(ex.reference, add_special_tokens=False)["input_ids"])) + 16)
    out = model.generate(input_ids=ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=budget,
                         do_sample=False, num_beams=1, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    return str(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)).strip()


def per_example(examples: list[inference.Example], models: list[Measured], terms: list[str]) -> list[dict]:
    rows = []
    for i, ex in enumerate(examples):
        row: dict[str, Any] = {"source": ex.source, "reference": ex.reference,
                               "reference_spans": term_spans(ex.reference, terms)}
        for m in models:
            g = m.generations[i]
            row[m.name] = {"generation": g, "chrf": m.chrf_per_example[i], "terms": found_terms(g, terms),
                           "spans": term_spans(g, terms), "content": content_recall(ex.source, g)}
        rows.append(row)
    return rows


# --- judging ------------------------------------------------------------------------------------------------

def judge(gates: dict[str, float], models: list[Measured]) -> list[dict[str, Any]]:
    by = {m.name: m.summary() for m in models}
    base, tuned = by["base"], by["tuned"]
    values = {
        "val_loss_drop": base["val_loss"] - tuned["val_loss"],
        "val_loss_max": tuned["val_loss"],
        "heldout_ppl_ratio_max": tuned["heldout_ppl"] / base["heldout_ppl"],
        "chrf_min": tuned["chrf"],
        "style_min": tuned["style"],
        "content_min": tuned["content"],
    }
    out = []
    for name, limit in gates.items():
        text, kind = GATES[name]
        value = values[name]
        ok = value >= limit if kind == "min" else value <= limit
        out.append({"gate": name, "limit": limit, "value": value, "ok": ok, "meaning": text.format(v=limit)})
    return out


def agree(models: list[Measured], cfg: dict[str, Any], run: runs.Run) -> dict[str, Any] | None:
    by = {m.name: m for m in models}
    if "merged" not in by:
        return None
    tuned, merged = by["tuned"], by["merged"]
    dtype = str(_merged_dtype(run.path / "merged")).replace("torch.", "")
    key = "qlora" if cfg.get("adapter") == "qlora" else ("lora-float32" if dtype == "float32" else "lora")
    tol = AGREEMENT[key]
    rel = abs(merged.val_loss - tuned.val_loss) / max(abs(tuned.val_loss), 1e-12)
    same = sum(a == b for a, b in zip(tuned.generations, merged.generations, strict=True))
    # fp32 LoRA differs only by rounding, so greedy decoding must give the same text; bf16 and NF4 may not
    must_match = key == "lora-float32"
    ok = rel <= tol and (same == len(tuned.generations) or not must_match)
    return {"relative_val_loss_diff": rel, "tolerance": tol, "ok": ok, "identical_generations": same,
            "generations": len(tuned.generations), "generations_must_match": must_match}


# --- small helpers ------------------------------------------------------------------------------------------

def _merged_dtype(merged: Path) -> Any:
    meta = safeio.read_json(merged / "config.json", what="merged/config.json", follow=False)  # checked before
    return inference.dtype_of(meta.get("dtype") or meta.get("torch_dtype") or "float32")
