#!/usr/bin/env python3
"""Score one adapter of a finished sweep run (or its base model) as `pipeline evaluate` does.

`smollm2_sweep.py` runs this by path in a fresh process per adapter, with the repository root as the working
directory, so that every score starts from a clean interpreter and one crash costs one row, not the sweep:

    python docs/research/smollm2_score.py RUN WHICH

RUN is the run folder (its config.yaml says what was trained); WHICH is "base" for the base model, else the
folder of the adapter (a checkpoint-* or the run's output/). For a full fine-tune (no adapter in the config)
WHICH is the folder of the weights. The last line of stdout is `@@` and a JSON object: the summary of
`evaluate.measure` plus the generations and the chrF of each example.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="the run folder (with config.yaml)")
    ap.add_argument("which", help='"base", or the folder of the adapter (or of the full weights) to score')
    args = ap.parse_args(argv)

    import yaml

    from pipeline import evaluate as ev
    from pipeline.core import inference

    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    exs = inference.examples(cfg)
    terms = ev.read_terms(Path("data/style_terms.txt"))
    held = ev.read_heldout(Path("data/general_heldout.txt"))
    tok = inference.tokenizer(cfg["base_model"])
    base = args.which == "base"
    full = cfg.get("adapter") in (None, "")
    path = cfg["base_model"] if base or not full else Path(args.which)
    adapter = None if base or full else Path(args.which)
    model = inference.load(path, adapter=adapter)
    result = ev.measure(args.which, model, tok, exs, held, terms, None)
    summary = result.summary()
    summary["generations"] = result.generations
    summary["chrf_per_example"] = result.chrf_per_example
    print("@@" + json.dumps(summary, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
