"""What smoke and train call for a run over several nodes (pipeline.core.nodes), without starting one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core import engine, gpus, nodes, runs
from pipeline.core.errors import UserError
from pipeline.core.topology import Topology

TWO = Topology(2, 1, "node01", 29500, "job")


def test_cpu_settings_only_for_several_processes_without_a_gpu(monkeypatch):
    monkeypatch.setattr(gpus, "count", lambda: 0)
    assert nodes.cpu_settings(None, 1) == {} and nodes.environment(None, 1) == {}
    assert nodes.cpu_settings(TWO, 1) == {"max_memory": {"cpu": nodes.CPU_MAX_MEMORY}}
    assert nodes.environment(TWO, 1) == {"ACCELERATE_USE_CPU": "true", "ACCELERATE_TORCH_DEVICE": "cpu"}
    monkeypatch.setattr(gpus, "count", lambda: 8)
    assert nodes.cpu_settings(TWO, 8) == {} and nodes.environment(TWO, 8) == {}


def test_the_launch_is_axolotl_s_torchrun_with_the_rendezvous():
    cmd = engine.command("train", Path("RUN/config.yaml"), gpus=1, nodes=TWO)
    assert cmd[1:6] == ["-m", "axolotl.cli.main", "train", "RUN/config.yaml", "--launcher"]
    assert cmd[6] == "torchrun"
    assert cmd[cmd.index("--") + 1:] == TWO.launcher_args(1)


def run_with(tmp_path, name: str, **manifest) -> runs.Run:
    path = tmp_path / name
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"stage": "train", "status": "failed", **manifest}))
    return runs.Run(path)


def test_resume_needs_the_node_count_it_started_with(tmp_path):
    run = run_with(tmp_path, "a", topology={"nnodes": 2, "node_rank": 1})
    nodes.check_resume(run, run.manifest(), TWO)
    with pytest.raises(UserError, match="trained on 2 nodes and this resume has 1; resume it with --nnodes 2"):
        nodes.check_resume(run, run.manifest(), None)
    one = run_with(tmp_path, "b")
    with pytest.raises(UserError, match="trained on 1 node and this resume has 2"):
        nodes.check_resume(one, one.manifest(), TWO)


def test_resume_without_a_run_takes_this_node_s_newest(tmp_path):
    mine = run_with(tmp_path, "20261206-080000-x-train", topology={"nnodes": 2, "node_rank": 1})
    run_with(tmp_path, "20261206-080001-x-train", topology={"nnodes": 2, "node_rank": 0})
    assert nodes.resume_ref(tmp_path, "", TWO) == str(mine.path)
    assert nodes.resume_ref(tmp_path, "named", TWO) == "named"
    assert nodes.resume_ref(tmp_path, "", None) == ""


def test_a_lost_peer_is_said_in_one_line(tmp_path, capsys):
    run = run_with(tmp_path, "r")
    (run.path / "axolotl.log").write_text("...\n[rank0]: RuntimeError: [gloo] Connection closed by peer [::1]:1\n")
    assert not nodes.say_lost(run, 1, None) and not nodes.say_lost(run, 0, TWO)
    assert nodes.say_lost(run, 1, TWO)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{run.path}: node-lost: another node of this 2-node run stopped during training")
    (run.path / "axolotl.log").write_text("CUDA out of memory\n")
    assert not nodes.say_lost(run, 1, TWO)
