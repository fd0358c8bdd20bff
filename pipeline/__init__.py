"""Reproducible LoRA/QLoRA fine-tuning on axolotl.

The package is a thin, tested layer over axolotl: it resolves a user's axolotl YAML into a run folder,
launches axolotl on the resolved copy, records what happened (manifest, per-step metrics) and judges the
result against bounds the config declares. Axolotl does all the training.
"""

__version__ = "0.1.0"
