"""Code that runs inside axolotl's process, and the contract between it and the launcher.

The launcher (`pipeline.core.engine`, in the process the user started) never imports this package's
modules: they import axolotl, transformers and torch (slow to import), which the child pays anyway. It reaches
them only by name: `python -m pipeline.in_axolotl.entry` runs axolotl's CLI module, and the resolved
config lists PLUGINS under `plugins:`, which axolotl loads itself. Environment variables below carry what
the launcher tells them. This file imports nothing heavy, so both sides can read it.

- `entry`: runs `axolotl.cli.<command>` and skips the interpreter's teardown after success;
- `recorder`: the metrics recorder plugin (metrics.jsonl: steps, memory peaks, phases);
- `seeding`: seeds what axolotl leaves unseeded, so a run repeats;
- `loss`: weights the loss per token across gradient accumulation and ranks (listed unless
  `pipeline.loss_weighting: per-micro-batch`);
- `profiling`: torch's profiler over one optimizer step (`--profile-step`).
"""

#: where the recorder writes metrics.jsonl
METRICS_ENV = "PIPELINE_METRICS_FILE"
#: when the launcher started the child (time.time()), for the recorder's phase timeline
LAUNCHED_ENV = "PIPELINE_LAUNCHED_AT"
#: the optimizer step the recorder profiles (`--profile-step`)
PROFILE_ENV = "PIPELINE_PROFILE_STEP"
#: the plugins the resolved config lists, by name (axolotl imports them in its own process)
PLUGINS = ("pipeline.in_axolotl.recorder.MetricsRecorder", "pipeline.in_axolotl.seeding.SeedAdapter")
#: the per-token loss plugin (pipeline.in_axolotl.loss), listed after PLUGINS where the run weights per token
TOKEN_LOSS_PLUGIN = "pipeline.in_axolotl.loss.TokenWeightedLoss"
#: the module the launcher runs axolotl's CLI through
ENTRY = "pipeline.in_axolotl.entry"
