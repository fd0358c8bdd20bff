"""The plumbing every stage builds on: config (load, override, resolve), the `pipeline:` section, runs
(folders, manifests) and their provenance, the launcher (`engine`), models pipeline builds itself and the
cache they live in, inference after training, the summary of a run's metrics, bounds, errors.

Stages (check, smoke, train, merge, evaluate, runs) import from here and from `pipeline.checks`, never
from each other; nothing here imports axolotl at module level (see docs/architecture.md).
"""
