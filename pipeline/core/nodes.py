"""A run over several nodes, as smoke and train see it: what they call between setting up the run folder and
launching axolotl (`join`), and what a multi-process run on CPUs needs (`cpu_settings`, `environment`).

One record of a several-node run:
- node 0 (global rank 0) keeps the record: its manifest lists every node (`nodes`: node rank, host, GPUs,
  hardware, versions, run folder) with the world size, and its metrics.jsonl every rank's peak memory (the
  recorder gathers them at the end of training);
- every other node's manifest points at it (`rank0`: host and run folder) and its metrics.jsonl holds its
  own phases only;
- `train --resume` of such a run needs the same node count (`resume-nodes` otherwise, exit 2); every node
  continues from node 0's last complete checkpoint, which each node must be able to read (a shared file
  system, as torchrun's own checkpoints assume).
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.core import agreement, runs
from pipeline.core.errors import UserError
from pipeline.core.topology import Topology

#: how much memory a CPU-only multi-process run may place the model in (axolotl's `max_memory`, see cpu_settings)
CPU_MAX_MEMORY = "1024GiB"


def _cpu_only(topology: Topology | None, gpus: int) -> bool:
    """Several processes and no GPU here."""
    if topology is None and gpus <= 1:
        return False
    from pipeline.core import gpus as probe

    return probe.count() == 0


def cpu_settings(topology: Topology | None, gpus: int) -> dict[str, Any]:
    """Settings axolotl 0.19 needs to run several processes on CPUs (none where a GPU is used).

    With WORLD_SIZE > 1, axolotl's normalize_config sets `device_map = {"": LOCAL_RANK}` (an accelerator
    index; utils/config/__init__.py) and the model load fails with "Cannot access accelerator device when
    none is available" (transformers modeling_utils, caching_allocator_warmup). A `max_memory` that names
    only the CPU makes axolotl infer the device map instead (loaders/model.py, _set_device_map_config),
    which then places everything on the CPU.
    """
    return {"max_memory": {"cpu": CPU_MAX_MEMORY}} if _cpu_only(topology, gpus) else {}


def environment(topology: Topology | None, gpus: int) -> dict[str, str]:
    """Environment for the launch, on CPUs only:
    - ACCELERATE_USE_CPU, without which transformers' TrainingArguments asks accelerate for a non-CPU state
      (accelerate/state.py, _prepare_backend: MULTI_CPU only with cpu=True) and every rank trains alone,
      undistributed, on its own copy of the data;
    - ACCELERATE_TORCH_DEVICE=cpu: accelerate names the device `cpu:0` otherwise, which transformers passes
      to torch.load as the map location of a resumed optimizer state (trainer.py,
      _load_optimizer_and_scheduler) and torch cannot restore to ("don't know how to restore data location").
    """
    return {"ACCELERATE_USE_CPU": "true", "ACCELERATE_TORCH_DEVICE": "cpu"} if _cpu_only(topology, gpus) else {}


def claim(run: runs.Run, topology: Topology, gpus: int, checkpoint: Path | None) -> dict[str, Any]:
    """What this node posts: what it will train (agreement.training_view, data_keys) and what it runs on."""
    cfg = yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8")) or {}
    manifest = run.manifest()
    return {
        "node_rank": topology.node_rank, "host": socket.gethostname(), "gpus": gpus,
        "training": agreement.training_view(cfg), "data": agreement.data_keys(manifest.get("data") or {}, cfg),
        "versions": manifest.get("versions"), "hardware": manifest.get("hardware"),
        "run": str(run.path.resolve()), "checkpoint": str(checkpoint.resolve()) if checkpoint else None,
    }


def join(run: runs.Run, topology: Topology | None, *, gpus: int, checkpoint: Path | None = None,
         subject: str | None = None) -> Path | None:
    """Meet the other nodes before launching axolotl; returns the checkpoint to continue from (node 0's;
    `checkpoint` itself on one node, `topology` None, where nothing else happens).

    On a difference (agreement.compare) the command refuses: UserError `nodes-differ`, exit 2, and a new
    run's folder (no attempt recorded yet) is removed again: nothing was trained in it. A node that never
    joins, or fails meanwhile: agreement.NodeLost, exit 3. On agreement the manifest records the nodes
    (see the module's docstring).
    """
    if topology is None:
        return checkpoint
    new = not run.manifest().get("attempts")
    mine = claim(run, topology, gpus, checkpoint)
    try:
        with agreement.meet(topology) as meeting:
            claims = meeting.gather("claim", mine)
            agreement.compare(claims, subject or str(run.path / "config.yaml"))
    except (UserError, agreement.NodeLost, KeyboardInterrupt):
        if new:
            _remove(run)
        raise
    base = claims[0]
    world = topology.nnodes * gpus
    fields: dict[str, Any] = {"topology": topology.as_dict(), "world_size": world, "gpus_per_node": gpus}
    if topology.node_rank == 0:
        fields["nodes"] = [{k: c.get(k) for k in ("node_rank", "host", "gpus", "run", "hardware", "versions")}
                           | {"ranks": list(range(c["node_rank"] * gpus, (c["node_rank"] + 1) * gpus))}
                           for c in claims]
    else:
        fields["rank0"] = {"host": base.get("host"), "run": base.get("run")}
    try:
        run.update_manifest(**fields)
    except OSError as exc:
        raise runs.unwritable(run.path, exc) from None
    if topology.node_rank == 0 or not base.get("checkpoint"):
        return checkpoint
    theirs = Path(base["checkpoint"])
    if not (theirs / "trainer_state.json").is_file():
        raise UserError.at(str(run.path), None, "resume-checkpoint",
                           f"node 0 continues from {theirs}, which this node ({socket.gethostname()}) cannot read; "
                           f"put the runs folder on storage every node shares (--runs-dir)")
    print(f"==> node {topology.node_rank}: continuing from node 0's {theirs}", file=sys.stderr)
    return theirs


def check_resume(run: runs.Run, manifest: dict[str, Any], topology: Topology | None) -> None:
    """A several-node run resumes on as many nodes as it started with (and a one-node run on one)."""
    was = int((manifest.get("topology") or {}).get("nnodes") or 1)
    now = topology.nnodes if topology else 1
    if was != now:
        raise UserError.at(str(run.path), None, "resume-nodes",
                           f"{run.name} trained on {was} node{'s' if was != 1 else ''} and this resume has {now}; "
                           f"resume it with --nnodes {was} (the data each rank saw, and its checkpoints, depend "
                           f"on it)")


def resume_ref(runs_dir: Path, ref: str, topology: Topology | None) -> str:
    """`train --resume` without RUN on a node of several: this node's newest unfinished train run (in a
    runs folder the nodes share, the newest run overall may be another node's); RUN itself otherwise."""
    if ref or topology is None:
        return ref
    for run in reversed(runs.all_runs(runs_dir)):
        m = run.manifest()
        where = m.get("topology") or {}
        if m.get("stage") == "train" and m.get("status") != "succeeded" and \
                where.get("node_rank") == topology.node_rank and where.get("nnodes") == topology.nnodes:
            return str(run.path)
    return ref


def gpus_per_node(manifest: dict[str, Any]) -> int:
    """The processes per node a run was started with (a run before several nodes: its world size)."""
    return int(manifest.get("gpus_per_node") or manifest.get("world_size") or 1)


#: what torch's collectives say in a rank's log when another node's process is gone (gloo, NCCL, the store)
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "remote process exited",
             "DistNetworkError", "Broken pipe", "NCCL communicator was aborted", "failed to recv, got 0 bytes")


def say_lost(run: runs.Run, code: int, topology: Topology | None) -> bool:
    """After a failed launch of a several-node run: one line `node-lost` when axolotl's log shows that another
    node's process went away (then this node stopped too: exit 3, as any failed launch). Returns whether."""
    if topology is None or code == 0:
        return False
    try:
        with (run.path / "axolotl.log").open("rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 256 * 1024))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return False
    seen = next((s for s in PEER_LOST if s in tail), None)
    if seen is None:
        return False
    print(f"{run.path}: node-lost: another node of this {topology.nnodes}-node run stopped during training "
          f"(\"{seen}\" in axolotl.log), so this node stopped too; see that node's log", file=sys.stderr)
    return True


def _remove(run: runs.Run) -> None:
    if run.lock is not None:
        run.lock.release()
        run.lock = None
    shutil.rmtree(run.path, ignore_errors=True)
