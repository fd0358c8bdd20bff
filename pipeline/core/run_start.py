"""A new run folder, set up the one way every stage does it: the config axolotl will run (`prepare`), the user's
config as written, and the manifest. The computation `pipeline.compute` chose is decided before (the stage
asks `pipeline.checks.compute_plan.plan`) and arrives here as a plain record, written as a comment and into the
manifest."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.core.axolotl_contract import PLUGINS, TOKEN_LOSS_PLUGIN
from pipeline.core.errors import printable
from pipeline.core.prepared import drop_incomplete_prepared, prepared_key

#: settings every run gets unless the config sets them itself
RUN_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1,
    "include_tkps": True,
}


#: below this much training data (bytes of the files, all datasets), tokenising and packing run in one process
SMALL_DATA_BYTES = 32 * 2**20


def prepare(axolotl_cfg: Mapping[str, Any], output_dir: Path, cache: Path,
            data_files: list[Path] | None = None, data_hashes: Mapping[str, str] | None = None,
            loss_weighting: str = "per-token") -> dict[str, Any]:
    """The config axolotl runs: output into the run folder, our plugins (the per-token loss's unless
    `loss_weighting` is "per-micro-batch"), prepared data keyed by content.

    Small data (at most SMALL_DATA_BYTES, 32 MiB, over all data files) gets `dataset_num_proc: 1` unless
    the config sets `dataset_num_proc` or `dataset_processes`. Axolotl defaults to one process per core,
    and its multipack sampler then packs in a fresh pool of forked workers each time it counts batches,
    each worker compiling the numba packer anew: on small data that costs more than parallel tokenisation
    saves (see benchmarks/README.md). The bins do not depend on the process count (packing groups are
    100,000 rows), so what is trained is unchanged. Past SMALL_DATA_BYTES, parallel tokenisation keeps its
    place.
    """
    cfg = dict(axolotl_cfg)
    for key, value in RUN_DEFAULTS.items():
        cfg.setdefault(key, value)
    if data_files and "dataset_num_proc" not in cfg and "dataset_processes" not in cfg:
        size = sum(p.stat().st_size for p in data_files if p.is_file())
        if size <= SMALL_DATA_BYTES:
            cfg["dataset_num_proc"] = 1
    cfg["output_dir"] = str(output_dir)
    # axolotl keys its prepared data by dataset settings and the tokenizer's name, never by file content:
    # an edited file would train its old rows. One folder per content key under the shared cache (or under
    # the config's own dataset_prepared_path) lets a repeat run skip tokenisation and nothing else
    base = Path(cfg.get("dataset_prepared_path") or cache / "prepared")
    cfg["dataset_prepared_path"] = str(base / prepared_key(cfg, data_hashes or {}))
    plugins = list(cfg.get("plugins") or [])
    ours = [*PLUGINS, TOKEN_LOSS_PLUGIN] if loss_weighting == "per-token" else list(PLUGINS)
    plugins += [p for p in ours if p not in plugins]
    cfg["plugins"] = plugins
    return cfg


def start_run(stage: str, resolved: Any, runs_dir: Path, *, compute: Mapping[str, Any] | None = None,
              **manifest: Any) -> Any:
    """A new run folder for `stage`, set up the one way every stage does it: the config axolotl will run
    (config.yaml, see `prepare`), the user's config as written (source.yaml) and the manifest, with the
    `--set` overrides and the bounds the run was started with. `resolved` is a config.ResolvedConfig.

    The data files are hashed once, here: the manifest and the prepared-data key hold the same sha256. The
    folder comes back locked by this process (`pipeline.core.lock`); one that cannot be set up completely
    (a full disk) is removed again, so no run folder is ever left without its manifest.
    """
    import hashlib

    from pipeline.core import cache, provenance, runs, safeio, section
    from pipeline.core.config import remote_code_origin, run_config_text

    cfg = resolved.source
    try:
        hashes = provenance.data_hashes(resolved.data_files)
    except safeio.BadFile as exc:
        raise exc.user_error(cfg.path) from None
    # `pipeline.compute: fastest`: the stage chose it (pipeline.checks.compute_plan.plan) and resolved.axolotl holds it
    if compute is not None:
        manifest["compute"] = dict(compute)
    run = runs.create(runs_dir, cfg.name, stage)
    with runs.setting_up(run):
        weighting = section.loss_weighting(cfg)
        axolotl_cfg = prepare(resolved.axolotl, run.output_dir, cache.cache_dir(), resolved.data_files, hashes, weighting)
        for cut in drop_incomplete_prepared(Path(axolotl_cfg["dataset_prepared_path"])):
            print(printable(f"note: removed {cut}: prepared data an earlier run left cut short"), file=sys.stderr)
        trusted = remote_code_origin(cfg, resolved.axolotl, axolotl_cfg)
        text = run_config_text(cfg.path, [f"Resolved by pipeline {stage} from {cfg.path}", *comment(compute)],
                               axolotl_cfg)
        runs.write_atomic(run.path / "config.yaml", text)
        runs.write_atomic(run.path / "source.yaml", cfg.text)
        runs.start_manifest(run, stage=stage, config_path=cfg.path.resolve(), config_sha256=cfg.sha256,
                            resolved_sha256=hashlib.sha256(text.encode()).hexdigest(),
                            data_files=resolved.data_files, data_hashes=hashes, offline=resolved.offline,
                            overrides=cfg.overrides, bounds=section.bounds(cfg), trust_remote_code=trusted,
                            loss_weighting=weighting, **manifest)
    return run


def comment(record: Mapping[str, Any] | None) -> list[str]:
    """Comment lines (without `# `) for the resolved config: the computation chosen and the estimate behind it."""
    if not record:
        return []
    summary = record["summary"]
    lines = [f"compute: fastest {summary}" if record.get("card_gib") else f"compute: fastest ({summary})"]
    if record.get("settings"):
        lines.append("set for it: " + ", ".join(f"{k}={v}" for k, v in record["settings"].items()))
    return lines
