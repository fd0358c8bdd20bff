#!/usr/bin/env python3
"""Write rehearsal rows: plain text the base model samples itself, to train on beside the style rows.

Training on text drawn from the base model's own distribution (temperature 1, no truncation) pulls the
adapter towards what the base already does, so it works as a regulariser against forgetting. Its expected
gradient at the base weights is zero: the base's samples cost it nothing. No outside corpus is needed,
and none of the evaluation's held-out text is used.
Each row starts from BOS and a short plain opener written here (everyday topics, none taken from
data/general_heldout.txt), and continues with the model's sample. The rows are `completion` rows for axolotl.

    python docs/research/rehearsal.py pipeline://smollm2-135m-instruct docs/research/data/rehearsal_smollm2.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

OPENERS = [
    "The town council met on Monday to", "Most houseplants need", "When the power went out,",
    "A good pair of walking shoes", "The museum opened a new exhibition about", "Every spring the farmers",
    "The report found that", "My neighbour keeps bees, and", "The bus to the airport", "Learning to swim",
    "The recipe calls for", "In the small harbour town,", "The school library", "Coffee prices rose",
    "The football match was", "Our office moved to", "The old bridge across the river", "A thunderstorm",
    "She opened the letter and", "The hospital added", "Most people sleep", "The train was crowded because",
    "On the first day of the course,", "The city planted",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a model reference pipeline resolves (pipeline://..., a folder)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--tokens", type=int, default=96, help="tokens sampled after each opener")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from pipeline.core import inference, models

    path = models.resolve(args.model) if args.model.startswith(models.SCHEME) else Path(args.model)
    tok = inference.tokenizer(path)
    model = inference.load(path)
    rows = []
    for i, opener in enumerate(OPENERS):
        torch.manual_seed(args.seed * 1000 + i)
        ids = tok(opener, add_special_tokens=False)["input_ids"]
        if tok.bos_token_id is not None:
            ids = [tok.bos_token_id, *ids]
        t = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(input_ids=t, attention_mask=torch.ones_like(t), do_sample=True, temperature=1.0,
                                 top_k=0, top_p=1.0, max_new_tokens=args.tokens, pad_token_id=tok.eos_token_id)
        text = tok.decode(out[0, 1 if tok.bos_token_id is not None else 0:], skip_special_tokens=True).strip()
        rows.append({"text": text})
        print(f"{i + 1}/{len(OPENERS)} {text[:90]!r}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
