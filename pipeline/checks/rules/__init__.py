"""The config rules, grouped by what they judge; importing this package registers them all."""

from pipeline.checks.rules import device, evaluation, model, sharding, startup, training  # noqa: F401 - registration
