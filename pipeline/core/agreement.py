"""Every node trains the same thing, or none starts: the nodes compare what they will train before axolotl runs.

Each node checks and resolves its config itself and sets up its run folder; then, before any node launches
axolotl, the nodes meet in a torch.distributed TCPStore at the rendezvous endpoint (node 0 serves it; it is
closed again before torchrun's own rendezvous takes the same port) and each one posts its claim:

    {"node_rank", "host", "gpus", "training": {...}, "data": {...}, "versions": {...}, "hardware": {...}}

`training` is the config axolotl will run (RUN/config.yaml) less what names the node's own folder
(`output_dir`; `dataset_prepared_path` by its content key only); `data` is every data file's sha256, by its
place in the config, and the prepared data's content key. Every node reads every claim and compares it with
node 0's, so every node reaches the same verdict: on a difference each one refuses with one line naming the
differing node and the first differing key (`nodes-differ`, exit 2), and removes its run folder. Node 0 then
posts its run folder, which the other nodes' manifests point at.

Bounded waits: a node that has not posted within the join timeout (`PIPELINE_JOIN_TIMEOUT_S`, default 600 s,
torchrun's own rendezvous default) ends every waiting node with `node-missing` (NodeLost, exit 3); one that
fails while the others wait says so through the store, and they stop at once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.core.errors import Finding, UserError
from pipeline.core.topology import Topology

JOIN_TIMEOUT_ENV = "PIPELINE_JOIN_TIMEOUT_S"
DEFAULT_JOIN_TIMEOUT_S = 600.0
#: what names a node's own run folder, and so differs between nodes training the same thing
PER_NODE_KEYS = ("output_dir",)


class NodeLost(Exception):
    """A node never joined, or failed while the others waited: its one line, exit 3 (ENGINE)."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(str(finding))
        self.finding = finding


def join_timeout() -> float:
    try:
        return max(1.0, float(os.environ.get(JOIN_TIMEOUT_ENV, DEFAULT_JOIN_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_JOIN_TIMEOUT_S


def training_view(axolotl_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config as every node must run it: its own folder left out, the prepared data by content key."""
    view = {k: v for k, v in axolotl_cfg.items() if k not in PER_NODE_KEYS}
    if view.get("dataset_prepared_path"):
        view["dataset_prepared_path"] = Path(str(view["dataset_prepared_path"])).name
    return view


def data_keys(hashes: Mapping[str, str], axolotl_cfg: Mapping[str, Any]) -> dict[str, str]:
    """Each data file's sha256 by its place (data[0], data[1], ...: its path may differ between nodes), and
    the prepared data's content key."""
    keys = {f"data[{i}]": digest for i, digest in enumerate(hashes.values())}
    if axolotl_cfg.get("dataset_prepared_path"):
        keys["prepared"] = Path(str(axolotl_cfg["dataset_prepared_path"])).name
    return keys


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaves, in order: {"a": {"b": 1}, "c": [2]} -> {"a.b": 1, "c.0": 2}."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
        return out
    return {prefix: value}


def first_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """The first key (in `a`'s order, then `b`'s extra keys) whose value differs, with both values."""
    fa, fb = flatten(a), flatten(b)
    missing = object()
    for key in [*fa, *(k for k in fb if k not in fa)]:
        va, vb = fa.get(key, missing), fb.get(key, missing)
        if va != vb:
            return key, (None if va is missing else va), (None if vb is missing else vb)
    return None


def compare(claims: list[dict[str, Any]], subject: str) -> None:
    """Raise UserError `nodes-differ` (one line) where a node's training or data differs from node 0's."""
    base = claims[0]
    for claim in claims[1:]:
        for part, label in (("training", "config"), ("data", "data")):
            diff = first_difference(base.get(part) or {}, claim.get(part) or {})
            if diff is None:
                continue
            key, mine, theirs = diff
            raise UserError.at(subject, None, "nodes-differ",
                               f"node {claim['node_rank']} ({claim.get('host')}) would train different {label} than "
                               f"node 0 ({base.get('host')}): first at {key} (node 0: {_short(mine)}, node "
                               f"{claim['node_rank']}: {_short(theirs)}); give every node the same config, --set "
                               f"values and data; no node started")
        if claim.get("gpus") != base.get("gpus"):
            raise UserError.at(subject, None, "nodes-differ",
                               f"node {claim['node_rank']} ({claim.get('host')}) has --gpus {claim.get('gpus')}, node 0 "
                               f"--gpus {base.get('gpus')}; give every node the same --gpus; no node started")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class Meeting:
    """The nodes' shared store for one launch: `gather` posts this node's value under a name and returns
    every node's, in node order."""

    def __init__(self, topology: Topology, store: Any, timeout: float) -> None:
        self.topology, self.store, self.timeout = topology, store, timeout
        self.prefix = f"pipeline/{topology.rdzv_id}/"

    def _key(self, *parts: object) -> str:
        return self.prefix + "/".join(str(p) for p in parts)

    def gather(self, name: str, value: Any) -> list[Any]:
        self.store.set(self._key(name, self.topology.node_rank), json.dumps(value, default=str))
        keys = [self._key(name, r) for r in range(self.topology.nnodes)]
        deadline = time.monotonic() + self.timeout
        while True:
            if self.store.check(keys):  # before any failure: a node that has all claims judges them itself
                return [json.loads(self.store.get(k)) for k in keys]
            for r in range(self.topology.nnodes):
                if self.store.check([self._key("failed", r)]):
                    why = self.store.get(self._key("failed", r)).decode("utf-8", "replace")
                    raise NodeLost(Finding("<nodes>", None, "node-failed",
                                           f"node {r} stopped before training: {why}; no node started"))
            if time.monotonic() > deadline:
                absent = [r for r, k in enumerate(keys) if not self.store.check([k])]
                raise NodeLost(Finding("<nodes>", None, "node-missing",
                                       f"node{'s' if len(absent) > 1 else ''} {', '.join(map(str, absent))} did not "
                                       f"join at {self.topology.endpoint} within {self.timeout:.0f} s "
                                       f"(${JOIN_TIMEOUT_ENV}); start `pipeline` on every node with the same "
                                       f"--rdzv-endpoint; no node started"))
            time.sleep(0.1)

    def fail(self, why: str) -> None:
        try:
            self.store.set(self._key("failed", self.topology.node_rank), why)
        except Exception:  # noqa: BLE001 - the store may be gone already; the others time out then
            pass


@contextmanager
def meet(topology: Topology, timeout: float | None = None) -> Iterator[Meeting]:
    """The store for this launch, served by node 0 at the rendezvous endpoint; closed on leaving, only
    after every node has left (so none is cut off mid-read), and the other nodes leave only once it is
    gone (so their torchrun does not reach it instead of node 0's)."""
    from torch.distributed import TCPStore

    timeout = join_timeout() if timeout is None else timeout
    wait = dt.timedelta(seconds=timeout)
    host = topology.node_rank == 0
    try:
        store = TCPStore(topology.host, topology.port, None, host, timeout=wait, wait_for_workers=False)
    except Exception as exc:  # noqa: BLE001 - refused, unreachable, or the port is taken
        doing = "serve" if host else "reach node 0 at"
        raise NodeLost(Finding("<nodes>", None, "node-missing",
                               f"cannot {doing} {topology.endpoint} ({str(exc).splitlines()[0][:120]}); "
                               f"{'free the port or pick another' if host else 'is node 0 started, and the port open?'}"
                               f"; no node started")) from None
    meeting = Meeting(topology, store, timeout)
    MET.add(topology.rdzv_id)
    try:
        yield meeting
    except BaseException as exc:
        if not isinstance(exc, NodeLost):
            meeting.fail(str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        raise
    finally:
        _leave(meeting, host)
        meeting.store = None
        del store  # the last reference: node 0's server closes here


#: rendezvous ids this process has met under (tell_others is for a node that never reached the meeting)
MET: set[str] = set()


def tell_others(topology: Topology, why: str, linger: float = 30.0) -> None:
    """A node that stops before the meeting (its checks refused the config) says so to the others, who end at
    once with `node-failed` instead of waiting out the join timeout. Node 0 serves the store for `linger`
    seconds or until every node has read it; another node posts through node 0's store if it answers
    within `linger`. Best effort: any failure here leaves the others to their timeout."""
    if topology.rdzv_id in MET:
        return
    try:
        with meet(topology, linger) as meeting:
            meeting.fail(why)
    except Exception:  # noqa: BLE001 - nobody to tell, or the store is gone: the others time out
        pass


def _leave(meeting: Meeting, host: bool) -> None:
    store, topology = meeting.store, meeting.topology
    try:
        store.set(meeting._key("left", topology.node_rank), "1")
        if host:
            keys = [meeting._key("left", r) for r in range(topology.nnodes)]
            deadline = time.monotonic() + min(meeting.timeout, 60.0)
            while not store.check(keys) and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            deadline = time.monotonic() + 60.0
            while time.monotonic() < deadline:  # until node 0 has closed the store
                store.check([meeting._key("left", 0)])
                time.sleep(0.05)
    except Exception:  # noqa: BLE001 - the store is gone: what the other nodes wait for
        pass
