"""The checks every stage runs before it spends time on a model: the same ones `pipeline check` runs.

`findings(loaded)` returns every problem found in a config and the data it names, without loading a
model or touching a GPU. Stages stop on errors and print warnings.
"""

from __future__ import annotations

from pipeline.core import bounds
from pipeline.core.config import PIPELINE_KEY, LoadedConfig
from pipeline.core.errors import Finding


def findings(loaded: LoadedConfig) -> list[Finding]:
    found: list[Finding] = []
    section = loaded.section
    found += bounds.validate(section.get("bounds"), str(loaded.path),
                             loaded.line(PIPELINE_KEY, "bounds"))
    from pipeline.core import rules  # the full rule set (config and data); see pipeline check

    found += rules.check(loaded)
    return found


def errors(found: list[Finding]) -> list[Finding]:
    return [f for f in found if f.severity == "error"]
