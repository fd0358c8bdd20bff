"""The nodes' agreement before launch (pipeline.core.agreement), over a real TCPStore on localhost.

Each "node" is a thread here; the store, its timeouts and the comparison are the ones `pipeline smoke|train
--nnodes` uses (tests/e2e/test_nodes.py runs them as separate commands).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from pipeline.core import agreement
from pipeline.core.errors import UserError
from pipeline.core.topology import Topology


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def claim(rank: int, **training: Any) -> dict[str, Any]:
    return {"node_rank": rank, "host": f"host{rank}", "gpus": 1,
            "training": {"base_model": "m", "learning_rate": 0.01, "datasets": [{"path": "a.jsonl"}], **training},
            "data": {"data[0]": "ab" * 32, "prepared": "cd" * 16}}


def meet_all(claims: list[dict[str, Any]], port: int, timeout: float = 20.0) -> list[Any]:
    """Run every claim as a node in its own thread; each one's result is the claims it saw or its exception."""
    results: list[Any] = [None] * len(claims)

    def node(rank: int) -> None:
        topo = Topology(len(claims), rank, "127.0.0.1", port, "t")
        try:
            with agreement.meet(topo, timeout) as meeting:
                seen = meeting.gather("claim", claims[rank])
                agreement.compare(seen, "cfg.yaml")
                results[rank] = seen
        except Exception as exc:  # noqa: BLE001 - the test reads it
            results[rank] = exc

    threads = [threading.Thread(target=node, args=(r,)) for r in range(len(claims))]
    for t in reversed(threads):  # the other nodes first: they wait for node 0's store
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(timeout + 30)
    return results


def test_nodes_that_agree_see_every_claim_and_free_the_port():
    port = free_port()
    results = meet_all([claim(0), claim(1), claim(2)], port)
    for seen in results:
        assert [c["node_rank"] for c in seen] == [0, 1, 2], seen
    with socket.socket() as s:  # torchrun's rendezvous takes the same port next
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def test_one_differing_key_makes_every_node_refuse_naming_the_node_and_the_key():
    results = meet_all([claim(0), claim(1, learning_rate=0.02)], free_port())
    for exc in results:
        assert isinstance(exc, UserError), exc
        (finding,) = exc.findings
        assert finding.rule == "nodes-differ"
        assert "node 1 (host1)" in finding.message and "first at learning_rate" in finding.message
        assert "node 0: 0.01, node 1: 0.02" in finding.message


def test_differing_data_is_named_by_its_place():
    other = claim(1)
    other["data"] = {**other["data"], "data[0]": "ef" * 32}
    exc = meet_all([claim(0), other], free_port())[0]
    assert isinstance(exc, UserError) and "different data" in str(exc) and "first at data[0]" in str(exc)


def test_a_node_that_never_joins_ends_the_others_within_the_timeout():
    port = free_port()
    started = time.monotonic()
    topo = Topology(2, 0, "127.0.0.1", port, "t")
    with pytest.raises(agreement.NodeLost) as err, agreement.meet(topo, 2.0) as meeting:
        meeting.gather("claim", claim(0))
    assert err.value.finding.rule == "node-missing" and "node 1 did not join" in str(err.value)
    assert time.monotonic() - started < 10


def test_node_0_that_never_starts_ends_the_others_within_the_timeout():
    topo = Topology(2, 1, "127.0.0.1", free_port(), "t")
    started = time.monotonic()
    with pytest.raises(agreement.NodeLost, match="cannot reach node 0"), agreement.meet(topo, 2.0):
        pass
    assert time.monotonic() - started < 15


def test_a_node_that_fails_meanwhile_ends_the_others_at_once():
    port = free_port()
    results: list[Any] = [None]

    def node0() -> None:
        try:
            with agreement.meet(Topology(2, 0, "127.0.0.1", port, "t"), 60.0) as meeting:
                meeting.gather("claim", claim(0))
                meeting.gather("run", "/runs/a")  # node 1 never posts this: it failed
        except Exception as exc:  # noqa: BLE001 - the test reads it
            results[0] = exc

    t = threading.Thread(target=node0)
    t.start()
    started = time.monotonic()
    with pytest.raises(RuntimeError), agreement.meet(Topology(2, 1, "127.0.0.1", port, "t"), 60.0) as meeting:
        meeting.gather("claim", claim(1))
        raise RuntimeError("disk full")
    t.join(30)
    assert isinstance(results[0], agreement.NodeLost) and "node 1 stopped before training: disk full" in str(results[0])
    assert time.monotonic() - started < 20


def test_training_view_leaves_out_only_the_node_s_own_folder():
    cfg = {"output_dir": "/runs/x/output", "dataset_prepared_path": "/cache/prepared/abc123", "lr": 1}
    assert agreement.training_view(cfg) == {"dataset_prepared_path": "abc123", "lr": 1}
    assert agreement.data_keys({"/a/x.jsonl": "11", "/a/y.jsonl": "22"}, cfg) == {
        "data[0]": "11", "data[1]": "22", "prepared": "abc123"}


def test_first_difference_walks_nested_keys_in_order():
    a = {"x": 1, "datasets": [{"path": "a", "type": "t"}], "z": 3}
    assert agreement.first_difference(a, a) is None
    assert agreement.first_difference(a, {**a, "datasets": [{"path": "b", "type": "t"}]}) == ("datasets.0.path", "a", "b")
    assert agreement.first_difference(a, {**a, "extra": True}) == ("extra", None, True)
