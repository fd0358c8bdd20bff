"""Which node this is: torchrun's flags, else torchrun's environment, else SLURM's (pipeline.core.topology)."""

from __future__ import annotations

import pytest

from pipeline.core.errors import UserError
from pipeline.core.topology import Topology, expand_nodelist, first_host, resolve


def test_nothing_set_is_one_node():
    assert resolve(env={}) is None
    assert resolve(nnodes=1, env={}) is None


def test_flags_name_the_node_and_the_rendezvous():
    t = resolve(2, 1, "node01:29400", env={})
    assert t == Topology(2, 1, "node01", 29400, "pipeline-node01-29400", "flags")
    assert t.launcher_args(8) == ["--nnodes=2", "--node_rank=1", "--nproc_per_node=8", "--rdzv_backend=static",
                                  "--rdzv_endpoint=node01:29400", "--rdzv_id=pipeline-node01-29400"]


def test_torchrun_environment_fills_absent_flags():
    env = {"PET_NNODES": "4", "PET_NODE_RANK": "3", "PET_RDZV_ENDPOINT": "head:1234", "PET_RDZV_ID": "job7"}
    assert resolve(env=env) == Topology(4, 3, "head", 1234, "job7", "torchrun")
    # a flag wins over the environment, value by value
    assert resolve(node_rank=2, env=env).node_rank == 2
    # MASTER_ADDR/MASTER_PORT name the endpoint where PET_RDZV_ENDPOINT does not
    env = {"PET_NNODES": "2", "PET_NODE_RANK": "0", "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29555"}
    assert resolve(env=env).endpoint == "10.0.0.5:29555"


def test_slurm_environment_starts_every_node_of_one_srun():
    env = {"SLURM_NNODES": "2", "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu-[07-08]", "SLURM_JOB_ID": "4242"}
    assert resolve(env=env) == Topology(2, 1, "gpu-07", 29500, "4242", "slurm")
    assert resolve(env={**env, "MASTER_PORT": "30000"}).port == 30000
    assert resolve(env={**env, "SLURM_NODEID": "0"}).rdzv_id == "4242"  # the same id on every node


@pytest.mark.parametrize(("spec", "hosts"), [
    ("node01", ["node01"]),
    ("a,b", ["a", "b"]),
    ("node[01-04,07]", ["node01", "node02", "node03", "node04", "node07"]),
    ("gpu[8-10],cpu3", ["gpu8", "gpu9", "gpu10", "cpu3"]),
    ("r[1-2]-n[1-2]", ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]),
    ("x[007]", ["x007"]),
])
def test_slurm_host_lists_expand_as_scontrol_shows_them(spec, hosts):
    assert expand_nodelist(spec) == hosts
    assert first_host(spec) == hosts[0]


@pytest.mark.parametrize(("kwargs", "rule", "words"), [
    ({"nnodes": 2, "rdzv_endpoint": "h:1"}, "node-rank", "needs this node's --node-rank"),
    ({"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "h:1"}, "node-rank", "outside 0..1"),
    ({"nnodes": 2, "node_rank": 0}, "rdzv-endpoint", "needs --rdzv-endpoint"),
    ({"nnodes": 2, "node_rank": 0, "rdzv_endpoint": "h:port"}, "rdzv-endpoint", "is not HOST:PORT"),
    ({"nnodes": 0}, "nnodes", "give 1 or more"),
])
def test_bad_values_are_one_line_naming_the_flag(kwargs, rule, words):
    with pytest.raises(UserError) as err:
        resolve(env={}, **kwargs)
    (finding,) = err.value.findings
    assert finding.rule == rule and words in finding.message, finding


def test_a_bad_environment_value_names_its_variable():
    with pytest.raises(UserError) as err:
        resolve(env={"PET_NNODES": "two"})
    assert "PET_NNODES 'two' is not a whole number" in str(err.value)
    with pytest.raises(UserError, match="cannot read the range"):
        expand_nodelist("n[a-b]")
