"""Several nodes on one machine: `pipeline smoke|train --nnodes 2 --node-rank R --rdzv-endpoint localhost:PORT`,
each node a separate command with its own runs folder (as two machines would have), one CPU process each,
gloo between them, the real axolotl through torchrun's static rendezvous.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import ROOT, TINY, copy_run, only_run, wait_until

#: sequential sampling and micro batch 1: every node sees single rows in order, so two nodes with
#: accumulation 2 train on exactly the rows one process sees with accumulation 4, each loss a row's mean
SAME_ROWS = ["--max-steps", "3", "--set", "curriculum_sampling=true", "--set", "micro_batch_size=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node(rank: int, port: int, runs_dir: Path, *args: str, command: str = "smoke",
         env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """One node's `pipeline` command, in its own session (a node killed is its whole process tree)."""
    argv = [sys.executable, "-m", "pipeline", command, *args, "--runs-dir", str(runs_dir),
            "--nnodes", "2", "--node-rank", str(rank), "--rdzv-endpoint", f"localhost:{port}"]
    return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (torchrun starts its workers in sessions of their own)."""
    import psutil

    root = psutil.Process(pid)
    for p in [*root.children(recursive=True), root]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def both(procs: list[subprocess.Popen[str]], timeout: float = 600) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


@pytest.mark.long
def test_two_nodes_train_the_losses_of_one_process_with_the_same_global_batch(cli, tmp_path):
    one = cli("smoke", TINY, *SAME_ROWS, "--set", "gradient_accumulation_steps=4", "--runs-dir", str(tmp_path / "one"),
              "--json", str(tmp_path / "one.json"))
    assert one.returncode == 0, one.stderr[-3000:]
    port = free_port()
    ended = both([node(r, port, tmp_path / f"node{r}", TINY, *SAME_ROWS, "--set", "gradient_accumulation_steps=2",
                       "--json", str(tmp_path / f"node{r}.json")) for r in (0, 1)])
    for code, _stdout, stderr in ended:
        assert code == 0, stderr[-3000:]
    single = json.loads((tmp_path / "one.json").read_text())["results"][0]
    first, second = (json.loads((tmp_path / f"node{r}.json").read_text())["results"][0] for r in (0, 1))
    assert single["world_size"] == 1 and first["world_size"] == 2
    assert len(first["losses"]) == 3
    np.testing.assert_allclose(first["losses"], single["losses"], atol=1e-3, rtol=0)
    assert second["losses"] == first["losses"]

    # one record: node 0's manifest names every node and rank, its metrics every rank's peak
    run0, run1 = only_run(tmp_path / "node0"), only_run(tmp_path / "node1")
    m0 = json.loads((run0 / "manifest.json").read_text())
    assert m0["world_size"] == 2 and m0["topology"]["nnodes"] == 2
    assert [(n["node_rank"], n["ranks"], n["gpus"]) for n in m0["nodes"]] == [(0, [0], 1), (1, [1], 1)]
    assert all(n["host"] == socket.gethostname() and n["versions"]["torch"] for n in m0["nodes"])
    ends = [json.loads(line) for line in (run0 / "metrics.jsonl").read_text().splitlines()
            if '"kind": "end"' in line]
    assert sorted(e["rank"] for e in ends) == [0, 1] and all(e["peak_rss_gib"] > 0 for e in ends)
    assert "per-rank peak: rank 0 " in ended[0][1] and "| rank 1 " in ended[0][1]
    m1 = json.loads((run1 / "manifest.json").read_text())
    assert m1["rank0"]["run"] == str(run0.resolve()) and "nodes" not in m1


def test_two_nodes_whose_configs_differ_in_one_key_both_refuse(tmp_path):
    port = free_port()
    ended = both([node(0, port, tmp_path / "node0", TINY),
                  node(1, port, tmp_path / "node1", TINY, "--set", "learning_rate=0.02")], timeout=300)
    for code, _, stderr in ended:
        assert code == 2, stderr[-3000:]
        (line,) = [x for x in stderr.splitlines() if "nodes-differ" in x]
        assert "node 1 (" in line and "first at learning_rate (node 0: 0.01, node 1: 0.02)" in line, line
        assert "Traceback" not in stderr
    for r in (0, 1):  # nothing trained, nothing kept
        assert not any(p.is_dir() for p in (tmp_path / f"node{r}").iterdir()), list((tmp_path / f"node{r}").iterdir())


def test_a_node_that_never_joins_ends_the_other_within_the_join_timeout(tmp_path):
    started = time.monotonic()
    (code, _, stderr), = both([node(0, free_port(), tmp_path / "node0", TINY, env={"PIPELINE_JOIN_TIMEOUT_S": "3"})],
                              timeout=300)
    assert code == 3, stderr[-3000:]
    (line,) = [x for x in stderr.splitlines() if "node-missing" in x]
    assert "node 1 did not join at localhost:" in line and "within 3 s" in line
    assert time.monotonic() - started < 120
    assert not any(p.is_dir() for p in (tmp_path / "node0").iterdir())


def test_a_node_whose_check_refuses_ends_the_other_at_once_with_its_reason(tmp_path):
    port = free_port()
    started = time.monotonic()
    ended = both([node(0, port, tmp_path / "node0", TINY),
                  node(1, port, tmp_path / "node1", TINY, "--set", "lerning_rate=0.1")], timeout=300)
    (code0, _, err0), (code1, _, err1) = ended
    assert code1 == 2 and "unknown-key" in err1, err1[-3000:]
    assert code0 == 3, err0[-3000:]
    (line,) = [x for x in err0.splitlines() if "node-failed" in x]
    assert "node 1 stopped before training:" in line and "lerning_rate" in line
    assert time.monotonic() - started < 120  # not the join timeout (600 s)
    assert not any(p.is_dir() for r in (0, 1) for p in (tmp_path / f"node{r}").glob("*"))


@pytest.mark.long
def test_a_node_killed_mid_run_ends_the_other_with_exit_3(tmp_path):
    port = free_port()
    long_run = [TINY, "--max-steps", "60"]
    procs = [node(r, port, tmp_path / f"node{r}", *long_run) for r in (0, 1)]
    try:
        def step() -> int:
            runs = [p for p in (tmp_path / "node0").glob("*/metrics.jsonl")]
            return sum('"kind": "train"' in line for r in runs for line in r.read_text().splitlines()) >= 2

        wait_until(step, what="node 0's second step", timeout=300, proc=procs[0])
        kill_tree(procs[1].pid)  # node 1 as a machine that fails: pipeline, torchrun and its worker
        killed = time.monotonic()
        code, _, stderr = both(procs[:1], timeout=300)[0]
        assert time.monotonic() - killed < 120
    finally:
        for p in procs:
            if p.poll() is None:
                kill_tree(p.pid)
    assert code == 3, stderr[-3000:]
    (line,) = [x for x in stderr.splitlines() if "node-lost" in x]
    assert "another node of this 2-node run stopped during training" in line
    m0 = json.loads((only_run(tmp_path / "node0") / "manifest.json").read_text())
    assert m0["status"] == "failed"


def test_resuming_on_a_different_node_count_is_refused_in_one_line(cli_here, tiny_trained, tmp_path):
    run = copy_run(tiny_trained, tmp_path / "runs")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest.update(status="failed", topology={"nnodes": 2, "node_rank": 0, "rdzv_endpoint": "h:1", "rdzv_id": "x"})
    (run / "manifest.json").write_text(json.dumps(manifest))
    # a run that stopped before its end: without the recorder's end record (a finished run is never resumed)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("".join(ln + "\n" for ln in lines if '"kind": "end"' not in ln))
    proc = cli_here("train", "--resume", str(run), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "resume-nodes: " + f"{run.name} trained on 2 nodes and this resume has 1; resume it with --nnodes 2 (the data "
        "each rank saw, and its checkpoints, depend on it)")


@pytest.mark.long
def test_a_two_node_train_resumes_on_two_nodes_from_node_0_s_checkpoint(tmp_path):
    # the runs folder is shared, as a cluster's is: node 1 reads node 0's checkpoint
    runs = tmp_path / "runs"
    port = free_port()
    # one epoch of 36 rows at micro batch 2 over two ranks is 9 steps: a checkpoint at 9, 18, 27 and 36
    procs = [node(r, port, runs, TINY, command="train", env={"PIPELINE_RUNS_DIR": str(runs)}) for r in (0, 1)]
    try:
        def checkpointed() -> bool:
            return any((p / "trainer_state.json").is_file() for p in runs.glob("*/output/checkpoint-*"))

        wait_until(checkpointed, what="node 0's first checkpoint", timeout=600, proc=procs[0])
    finally:
        for p in procs:
            kill_tree(p.pid)
            p.wait(60)
    folders = sorted(p for p in runs.iterdir() if p.is_dir())
    assert len(folders) == 2
    by_rank = {json.loads((f / "manifest.json").read_text())["topology"]["node_rank"]: f for f in folders}
    port = free_port()
    ended = both([node(r, port, runs, "--resume", str(by_rank[r]), command="train") for r in (0, 1)])
    for code, _, stderr in ended:
        assert code == 0, stderr[-3000:]
    m0 = json.loads((by_rank[0] / "manifest.json").read_text())
    assert m0["status"] == "succeeded" and m0["summary"]["steps"] == 36
    assert m0["attempts"][-1]["from_step"] >= 9
    m1 = json.loads((by_rank[1] / "manifest.json").read_text())
    assert m1["status"] == "succeeded" and m1["rank0"]["run"] == str(by_rank[0].resolve())
