"""Code that runs inside axolotl's process, and the contract between it and the launcher.

The launcher (`pipeline.core.engine`, in the process the user started) never imports this package's
modules, nor this package: they import axolotl, transformers and torch (slow to import), which the child pays
anyway. It reaches them only by name: `python -m pipeline.in_axolotl.entry` runs axolotl's CLI module, and
the resolved config lists PLUGINS under `plugins:`, which axolotl loads itself. Those names and the
environment variables that carry what the launcher tells them live in `pipeline.core.axolotl_contract`, a
leaf both sides import; they are re-exported here for the code inside axolotl.

- `entry`: runs `axolotl.cli.<command>` and skips the interpreter's teardown after success;
- `recorder`: the metrics recorder plugin (metrics.jsonl: steps, memory peaks, phases);
- `seeding`: seeds what axolotl leaves unseeded, so a run repeats;
- `loss`: weights the loss per token across gradient accumulation and ranks (listed unless
  `pipeline.loss_weighting: per-micro-batch`);
- `profiling`: torch's profiler over one optimizer step (`--profile-step`).
"""

from pipeline.core.axolotl_contract import (
    ENTRY,
    LAUNCHED_ENV,
    METRICS_ENV,
    PLUGINS,
    PROFILE_ENV,
    TOKEN_LOSS_PLUGIN,
)

__all__ = ["ENTRY", "LAUNCHED_ENV", "METRICS_ENV", "PLUGINS", "PROFILE_ENV", "TOKEN_LOSS_PLUGIN"]
