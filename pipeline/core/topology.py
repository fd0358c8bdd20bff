"""Which node of a several-node run this is: torchrun's flags, else torchrun's and SLURM's environment.

    pipeline train CONFIG --nnodes 2 --node-rank 0 --rdzv-endpoint node01:29500 [--gpus 8]

The flags are torchrun's own (`--nnodes`, `--node-rank`, `--rdzv-endpoint`, `--rdzv-id`). A flag left out is
read, in this order, from torchrun's environment (`PET_NNODES`, `PET_NODE_RANK`, `PET_RDZV_ENDPOINT`,
`PET_RDZV_ID`: the variables torchrun itself reads its flags from; `MASTER_ADDR`/`MASTER_PORT` for the
endpoint), then from SLURM's (`SLURM_NNODES`, `SLURM_NODEID`, the first host of `SLURM_JOB_NODELIST` at port
`MASTER_PORT` or 29500, `SLURM_JOB_ID` as the rendezvous id), so that one `srun pipeline train CONFIG`
starts every node. Nothing set anywhere is one node, as before.

The launch itself is torchrun's, through axolotl's own launcher (`pipeline.core.engine.command`), with the
static rendezvous: it is the one torchrun backend that honours `--node-rank` (c10d's orders nodes as they
arrive), and node 0 must hold global rank 0, whose run folder holds the run's record. The rendezvous id is
always passed: axolotl's launcher otherwise appends a random one per node (axolotl 0.19,
cli/utils/train.py, `_add_default_rdzv_args`), and nodes with different ids never meet.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.core.errors import UserError

#: torchrun's default port, used where SLURM names the hosts but nothing names a port
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class Topology:
    """One node's place in a run of `nnodes` nodes meeting at `host:port` under `rdzv_id`."""

    nnodes: int
    node_rank: int
    host: str
    port: int
    rdzv_id: str
    #: where the values came from: "flags", "torchrun", "slurm" (the first of them that set anything)
    source: str = "flags"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def launcher_args(self, nproc_per_node: int) -> list[str]:
        """torchrun's arguments for this node: `nproc_per_node` processes, the static rendezvous."""
        return [f"--nnodes={self.nnodes}", f"--node_rank={self.node_rank}", f"--nproc_per_node={nproc_per_node}",
                "--rdzv_backend=static", f"--rdzv_endpoint={self.endpoint}", f"--rdzv_id={self.rdzv_id}"]

    def as_dict(self) -> dict[str, object]:
        return {"nnodes": self.nnodes, "node_rank": self.node_rank, "rdzv_endpoint": self.endpoint,
                "rdzv_id": self.rdzv_id, "source": self.source}


def resolve(nnodes: int | None = None, node_rank: int | None = None, rdzv_endpoint: str | None = None,
            rdzv_id: str | None = None, env: Mapping[str, str] | None = None) -> Topology | None:
    """This node's topology, or None for a one-node run (nothing set, or one node named).

    Flags win over torchrun's environment, which wins over SLURM's, value by value. Bad values raise
    UserError (exit 2), naming the flag or the variable they came from.
    """
    env = os.environ if env is None else env
    source = "flags" if any(v is not None for v in (nnodes, node_rank, rdzv_endpoint)) else ""
    torchrun = {k: env.get(f"PET_{k}") for k in ("NNODES", "NODE_RANK", "RDZV_ENDPOINT", "RDZV_ID")}
    master = f"{env['MASTER_ADDR']}:{env.get('MASTER_PORT', DEFAULT_PORT)}" if env.get("MASTER_ADDR") else None
    slurm_hosts = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    slurm = {"NNODES": env.get("SLURM_NNODES") or env.get("SLURM_JOB_NUM_NODES"), "NODE_RANK": env.get("SLURM_NODEID"),
             "RDZV_ENDPOINT": f"{first_host(slurm_hosts)}:{env.get('MASTER_PORT', DEFAULT_PORT)}" if slurm_hosts else None,
             "RDZV_ID": env.get("SLURM_JOB_ID")}

    def pick(flag: object, key: str, fallback: str | None = None) -> tuple[str | None, str]:
        nonlocal source
        if flag is not None:
            return str(flag), f"--{key.lower().replace('_', '-')}"
        for name, values in (("torchrun", torchrun), ("slurm", slurm)):
            if values.get(key) not in (None, ""):
                source = source or name
                return str(values[key]), (f"PET_{key}" if name == "torchrun" else f"SLURM's {key.lower()}")
        if fallback is not None:
            source = source or "torchrun"
            return fallback, "MASTER_ADDR/MASTER_PORT"
        return None, f"--{key.lower().replace('_', '-')}"

    n_text, n_from = pick(nnodes, "NNODES")
    n = _integer(n_text, n_from, "nnodes", minimum=1) if n_text is not None else 1
    if n == 1:
        return None
    r_text, r_from = pick(node_rank, "NODE_RANK")
    if r_text is None:
        raise _bad("node-rank", f"--nnodes {n} needs this node's --node-rank (0..{n - 1}); or run under srun, "
                                f"which sets SLURM_NODEID")
    r = _integer(r_text, r_from, "node-rank", minimum=0)
    if r >= n:
        raise _bad("node-rank", f"{r_from} {r} is outside 0..{n - 1} for {n} nodes")
    e_text, e_from = pick(rdzv_endpoint, "RDZV_ENDPOINT", master)
    if not e_text:
        raise _bad("rdzv-endpoint", f"--nnodes {n} needs --rdzv-endpoint HOST:PORT, the host of node 0 and a free "
                                    f"port there (e.g. node01:{DEFAULT_PORT})")
    host, port = _endpoint(e_text, e_from)
    i_text, _ = pick(rdzv_id, "RDZV_ID")
    # the same on every node without being told: the endpoint names the run's meeting point
    return Topology(n, r, host, port, i_text or f"pipeline-{host}-{port}", source or "flags")


def first_host(nodelist: str | None) -> str:
    """The first host of a SLURM host list: `node[01-04,07],gpu3` -> `node01`."""
    hosts = expand_nodelist(nodelist or "")
    if not hosts:
        raise _bad("rdzv-endpoint", f"SLURM_JOB_NODELIST {nodelist!r} names no host; give --rdzv-endpoint HOST:PORT")
    return hosts[0]


def expand_nodelist(spec: str) -> list[str]:
    """Every host of a SLURM host list, in order: `a[1-3,07],b` -> a1 a2 a3 a07 b (zero padding kept,
    several bracket groups multiply out: `r[1-2]-n[1-2]` -> r1-n1 r1-n2 r2-n1 r2-n2)."""
    hosts: list[str] = []
    for item in _split_top(spec.strip()):
        hosts += _expand_one(item)
    return hosts


def _split_top(spec: str) -> list[str]:
    """Split at commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    parts.append(spec[start:])
    return [p.strip() for p in parts if p.strip()]


def _expand_one(item: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", item)
    if m is None:
        return [item]
    head, tail = item[: m.start()], item[m.end():]
    out = []
    for part in m.group(1).split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise _bad("rdzv-endpoint", f"SLURM host list {item!r}: cannot read the range {part!r}")
        width = len(lo)
        for k in range(int(lo), int(hi or lo) + 1):
            out += [f"{head}{k:0{width}d}{rest}" for rest in _expand_one(tail)]
    return out


def _endpoint(text: str, origin: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:  # torchrun accepts a bare host and uses its default port
        host, port = text.strip(), str(DEFAULT_PORT)
    host = host.strip("[]")  # [::1]:29500
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad("rdzv-endpoint", f"{origin} {text!r} is not HOST:PORT (e.g. node01:{DEFAULT_PORT})")
    return host, int(port)


def _integer(text: str, origin: str, rule: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _bad(rule, f"{origin} {text!r} is not a whole number") from None
    if value < minimum:
        raise _bad(rule, f"{origin} {value}: give {minimum} or more")
    return value


def _bad(rule: str, message: str) -> UserError:
    return UserError.at("<command line>", None, rule, message)
