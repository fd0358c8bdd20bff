"""How long `pipeline check` takes, per config, as a user runs it (a whole child process).

    python benchmarks/check_time.py [CONFIG...] [--repeat 3] [--out benchmarks/results/check-time-<host>.json]

Speed is measured here and recorded with the machine, the versions and the command; it is never
asserted in a test (a timed assertion failed the suite on a busy 2-core machine). The target is under
5 s a config on a CPU. Default: every config in configs/. The first run of each also fills the shape
cache, so the best of --repeat runs is the figure of a warm machine, and the first is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core import provenance, runs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    configs = args.configs or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*.yaml"))
    rows = []
    for cfg in configs:
        walls = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "pipeline", "check", cfg], cwd=ROOT, capture_output=True,
                                  text=True)
            walls.append(round(time.perf_counter() - start, 2))
        rows.append({"config": cfg, "exit_code": proc.returncode, "first_s": walls[0], "best_s": min(walls),
                     "walls_s": walls})
        print(f"{cfg}: best {min(walls):.2f} s, first {walls[0]:.2f} s (exit {proc.returncode})")
    load = os.getloadavg()
    payload = {"measured_at": runs.now(), "command": [sys.executable, *sys.argv], "hardware": provenance.hardware(),
               "load_average_1m": round(load[0], 2), "versions": provenance.versions(), "git": provenance.git_revision(ROOT),
               "rows": rows}
    out = args.out or ROOT / "benchmarks" / "results" / f"check-time-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
