"""Reading what a user hands us, bounded: configs, datasets and the files a run folder holds.

One reader for every file pipeline reads, in three modules by concern:

- `files`: the reader itself. A file's type and size are checked before it is opened and again on the
  open descriptor; FIFOs, devices, directories, sockets and oversized files are refused in one line
  (`BadFile`); text is UTF-8, read whole or line by line with a cap on each line.
- `structured`: JSON and YAML parsed with bounds (alias bombs, depth, NaN, lone surrogates).
- `artifacts`: what training and merging leave (safetensors, torch checkpoint files, an adapter's
  config, a merged folder), checked from their headers before anything loads them.

Callers use the names re-exported here (`safeio.read_text`, `safeio.load_yaml`, ...).
"""

from pipeline.core.safeio.artifacts import (
    adapter_config_problem,
    checkpoint_problem,
    merged_problem,
    safetensors_problem,
    torch_file_problem,
)
from pipeline.core.safeio.files import (
    CHUNK,
    DATA_BYTES_ENV,
    DEFAULT_DATA_BYTES,
    DEFAULT_LINE_BYTES,
    LINE_BYTES_ENV,
    MAX_CONFIG_BYTES,
    MAX_METRICS_BYTES,
    MAX_RECORD_BYTES,
    BadFile,
    MiB,
    check_regular,
    data_bytes,
    human,
    limit,
    line_bytes,
    lines,
    open_regular,
    present,
    read_bytes,
    read_text,
    records,
    sha256,
)
from pipeline.core.safeio.structured import (
    MAX_YAML_NODES,
    UNBUILDABLE,
    find_nan,
    json_loads,
    load_yaml,
    lone_surrogate,
    read_json,
)

__all__ = [
    "CHUNK", "DATA_BYTES_ENV", "DEFAULT_DATA_BYTES", "DEFAULT_LINE_BYTES", "LINE_BYTES_ENV", "MAX_CONFIG_BYTES",
    "MAX_METRICS_BYTES", "MAX_RECORD_BYTES", "MAX_YAML_NODES", "UNBUILDABLE", "BadFile", "MiB",
    "adapter_config_problem", "check_regular", "checkpoint_problem", "data_bytes", "find_nan", "human",
    "json_loads", "limit", "line_bytes", "lines", "load_yaml", "lone_surrogate", "merged_problem",
    "open_regular", "present", "read_bytes", "read_json", "read_text", "records", "safetensors_problem",
    "sha256", "torch_file_problem",
]
