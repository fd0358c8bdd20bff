"""The tiny CPU config's per-step losses on its fixed seed, against stored values (torchtune's way), and two
runs of one seed bit for bit the same.

A bound on the final loss lets a masking or label-shift bug through (the loss still falls); the exact
losses of the first steps do not: step 1 is the untrained model's loss on the assistant tokens, so a
change of what is trained on moves it, and every later step follows from the gradients.

Two settings are stored, each read from a run the suite makes anyway: the embedded default's 3-step smoke
as `nox -s smoke` runs it, one row per sequence (the session's shared smoke, conftest's `tiny_smoke`), and
8 steps with sample packing (the same-seed pair below). Stored from those commands on this project's
2-core CPU machine (torch 2.13.0 CPU, axolotl 0.19.0): repeat runs were bit-identical, with the profiler
over step 2 or without, so the tolerance is torchtune's for LoRA (rtol = atol = 1e-5), which leaves room
for another CPU's reduction order and nothing more.

Both were stored again once the loss became weighted per token (pipeline.in_axolotl.loss): with accumulation 1
both weightings are a per-token mean over the micro batch, and the values moved by at most 4e-7 relative (a sum
divided once instead of a mean). The packed losses were measured with the heap left to the collector
(PIPELINE_GC_FREEZE=0) and with it frozen (the default, pipeline.in_axolotl.recorder), bit for bit the same, so
a run with the heap frozen that matches them shows that freezing, which only spares axolotl's packer its
collections, changes nothing that is trained. (The run with the collector on takes 28 s here, the frozen one 17 s.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import TINY

pytestmark = pytest.mark.slow

#: `pipeline smoke configs/tiny_cpu.yaml` (3 steps)
SMOKE = [7.639447212219238, 7.5956807136535645, 7.481550216674805]
#: `pipeline smoke configs/tiny_cpu.yaml --max-steps 8 --set sample_packing=true`, PIPELINE_GC_FREEZE=0 and 1
PACKED = [7.64361572265625, 7.591704368591309, 7.372702121734619, 7.017537593841553, 6.653935432434082,
          6.376858234405518, 6.159225940704346, 6.062886714935303]


def smoke_json(runs_dir: Path) -> dict:
    (path,) = runs_dir.glob("smoke-*.json")
    return json.loads(path.read_text())


def cpu_only(gpu_count: int) -> None:
    if gpu_count:
        pytest.skip("the stored losses are the CPU's; a GPU's kernels reduce in another order")


def test_the_default_smoke_losses_match_the_stored_ones(tiny_smoke, gpu_count):
    cpu_only(gpu_count)
    run, _ = tiny_smoke
    (result,) = smoke_json(run.parent)["results"]
    assert result["losses"] == pytest.approx(SMOKE, rel=1e-5, abs=1e-5)


def test_same_seed_identical_stored_losses_a_broken_bound_and_prepared_rows_reused(cli, tmp_path, gpu_count):
    """Two packed runs of one config on its seed train bit for bit the same, and as the stored losses (which
    a run with the heap left to the collector made: see above). The second also carries a bound below what
    the run reaches: it trains all the same, then fails (exit 1) with one line for that bound and none for
    the bound it meets. And it finds the first run's prepared rows under their content key: it loads them
    and tokenises nothing."""
    strict = ("--set", "pipeline.bounds.peak_rss_gib=0.05", "--set", "pipeline.bounds.final_loss=[0.5, 8.0]")
    ended = []
    for name, extra in (("first", ()), ("second", strict)):
        runs = tmp_path / name
        proc = cli("smoke", TINY, "--runs-dir", str(runs), "--max-steps", "8", "--set", "sample_packing=true", *extra)
        ended.append((proc, smoke_json(runs)["results"][0], runs))
    (first, a, _), (second, b, runs) = ended
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(a["losses"]) == 8 and a["losses"] == b["losses"]
    if not gpu_count:
        assert a["losses"] == pytest.approx(PACKED, rel=1e-5, abs=1e-5)

    assert second.returncode == 1, second.stderr[-3000:]
    failed = [line for line in second.stderr.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and failed[0].startswith(f"{TINY}: bound peak_rss_gib FAILED: limit <= 0.05 GiB, value ")
    verdicts = {v["bound"]: v["ok"] for v in b["bounds"]}
    assert b["ok"] is False and verdicts["peak_rss_gib"] is False and verdicts["final_loss"] is True
    assert [k for k, ok in verdicts.items() if not ok] == ["peak_rss_gib"]

    log = (runs / b["run"] / "axolotl.log").read_text()
    assert "Loading prepared dataset from disk" in log and "Tokenizing Prompts" not in log
