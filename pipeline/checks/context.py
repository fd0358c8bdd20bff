"""What every rule looks at: the config as written and as axolotl resolved it, the target, the model's
shape, the data and the schedule; and the Report the checks return.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pipeline.checks import data, hub_rows, shapes
from pipeline.checks.target import Target
from pipeline.core.config import LoadedConfig
from pipeline.core.errors import Finding


@dataclass
class Schedule:
    """Optimizer steps as axolotl computes them (utils/trainer.py calculate_total_num_steps)."""

    train_rows: int | None = None
    sequences: int | None = None  # rows, or packed sequences with sample_packing
    batch: int = 1
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    warmup_steps: int | None = None
    #: False: sequences and steps are upper bounds (token lengths bounded, not measured)
    exact: bool = True
    #: False: total_steps and warmup_steps are upper bounds
    total_exact: bool = True
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}



@dataclass
class Context:
    loaded: LoadedConfig
    cfg: dict[str, Any]  # as written, without the pipeline: section
    axo: dict[str, Any] | None  # as axolotl's validation returns it (None where it rejects the config)
    target: Target
    shape: shapes.Shape | None = None
    sets: list[data.DataSet] = field(default_factory=list)
    #: the hub's row counts of the training entries that name hub datasets (pipeline.checks.hub_rows)
    hub_rows: list[hub_rows.Rows] = field(default_factory=list)
    schedule: Schedule = field(default_factory=Schedule)
    #: facts.compat, judged once for the compat-crashes rule and the facts (pipeline.checks.matrix_lookup.facts)
    compat: dict[str, Any] | None = None

    def get(self, key: str, default: Any = None) -> Any:
        """A setting as axolotl resolved it, else as written."""
        if self.axo is not None and self.axo.get(key) is not None:
            return self.axo[key]
        value = self.cfg.get(key)
        return default if value is None else value

    @property
    def adapter(self) -> str | None:
        a = self.cfg.get("adapter")
        return str(a) if a in ("lora", "qlora") else None



@dataclass
class Report:
    path: str
    findings: list[Finding]
    facts: dict[str, Any]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != "error"]



@contextmanager
def quiet() -> Iterator[None]:
    """axolotl logs warnings while it validates (deprecations, auto-enabled kernels): not ours to print."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)



def as_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default



def as_float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default



def count(x: int | float) -> str:
    return f"{x:,}"
