"""The tiny CPU config's per-step losses on its fixed seed, against stored values (torchtune's way).

A bound on the final loss lets a masking or label-shift bug through (the loss still falls); the exact
losses of the first steps do not: step 1 is the untrained model's loss on the assistant tokens, so a
change of what is trained on moves it, and every later step follows from the gradients.

Stored from `pipeline smoke configs/tiny_cpu.yaml --max-steps 8` on this project's 2-core CPU machine
(torch 2.13.0 CPU, axolotl 0.19.0): two runs were bit-identical, so the tolerance is torchtune's for
LoRA (rtol = atol = 1e-5), which leaves room for another CPU's reduction order and nothing more.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

EXPECTED = [7.639447212219238, 7.5956807136535645, 7.443902015686035, 7.184054374694824,
            6.895050525665283, 6.648616313934326, 6.477668285369873, 6.424126625061035]


def test_tiny_cpu_losses_match_the_stored_ones(cli, runs_dir, tmp_path, gpu_count):
    if gpu_count:
        pytest.skip("the stored losses are the CPU's; a GPU's kernels reduce in another order")
    out = tmp_path / "smoke.json"
    proc = cli("smoke", "configs/tiny_cpu.yaml", "--max-steps", "8", "--runs-dir", str(runs_dir), "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["losses"] == pytest.approx(EXPECTED, rel=1e-5, abs=1e-5)
