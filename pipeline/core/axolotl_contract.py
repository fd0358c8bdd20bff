"""The contract between the launcher (`pipeline.core.engine`, `pipeline.core.run_start`) and the code that runs
inside axolotl's process (`pipeline.in_axolotl`): the names axolotl loads and the environment variables
that carry what the launcher tells them. A leaf: it imports nothing, so both sides read it and neither
imports the other (see pipeline/in_axolotl/__init__.py)."""

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
