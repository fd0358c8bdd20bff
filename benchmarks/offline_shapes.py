"""How many configs' base models the check knows offline: a corpus of axolotl configs nobody here wrote.

    HF_HUB_OFFLINE=1 python benchmarks/offline_shapes.py [FOLDER] [--list]

FOLDER defaults to ../shared/corpus/axolotl-examples (axolotl's own examples). Every config is read as the
check reads it, with the hub forbidden and empty Hugging Face and pipeline caches, so only what ships in
pipeline/architectures (and a config's local model folder) can answer. A config counts as known when the check
finds its model's config.json (`pipeline.checks.architecture`) and transformers builds it on the meta device
(`pipeline.checks.shapes`): the parameter count, the memory estimate and the context-length check then run.
Configs without a base_model are left out of both counts. --list prints the models it does not know, most
used first.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", type=Path, default=ROOT.parent / "shared" / "corpus" / "axolotl-examples")
    ap.add_argument("--list", action="store_true", help="print the base models not known, most used first")
    args = ap.parse_args()
    empty = Path(tempfile.mkdtemp(prefix="offline-shapes-"))
    os.environ.update(HF_HUB_OFFLINE="1", HF_HOME=str(empty / "hf"), HF_HUB_CACHE=str(empty / "hf" / "hub"),
                      PIPELINE_CACHE=str(empty / "cache"))
    from pipeline.checks import shapes
    from pipeline.checks.architecture import architecture
    from pipeline.core import config

    known, unknown = 0, Counter[str]()
    for path in sorted(args.folder.glob("*.y*ml")):
        try:
            loaded = config.load(path)
        except Exception:  # noqa: BLE001 - a config the check refuses to read has no model to know
            continue
        cfg = {k: v for k, v in loaded.data.items() if k != config.PIPELINE_KEY}
        ref = cfg.get("base_model_config") or cfg.get("base_model")
        if not ref:
            continue
        arch, _ = architecture(loaded, cfg)
        try:
            ok = arch is not None and shapes.shape(arch, cache=False).total_params > 0
        except Exception:  # noqa: BLE001 - a config.json transformers cannot build is not known
            ok = False
        known += ok
        if not ok:
            unknown[str(ref)] += 1
    total = known + sum(unknown.values())
    print(f"{known} of {total} configs in {args.folder}: base model known offline "
          f"({len(unknown)} distinct models not known)")
    if args.list:
        for ref, n in unknown.most_common():
            print(f"{n:4d}  {ref}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
