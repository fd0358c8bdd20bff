"""Every rule's id, severity and one-line description, in one place.

Config rules register themselves with `@rule(id, severity, description)` (their message is the line they
yield); rules found elsewhere (axolotl's schema, the data, the `pipeline:` section) are declared here with
`declare`, and their findings take their severity from here. docs/check.md has a row per id (a hygiene
test holds the two together).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.checks.context import Context


#: rule id -> (severity, what it catches); rules registered with @rule add themselves
RULES: dict[str, tuple[str, str]] = {
    "not-a-training-config": ("error", "a file that is not a training config (axolotl's --cloud launcher file)"),
    "unknown-key": ("error", "a key axolotl's schema does not know (axolotl drops it and uses its default)"),
    "ignored-key": ("warning", "a key axolotl drops whose value is what happens without it (empty, or the "
                               "default that applies)"),
    "axolotl-validation": ("error", "axolotl's own validation rejects the config"),
    "axolotl-needs-package": ("warning", "axolotl's validation needs a package that is not installed here"),
    "plugin-import": ("error", "a plugin that does not import (axolotl logs it and trains on without it)"),
    "code-will-run": ("warning", "Python from outside axolotl and transformers that the run would execute: "
                                 "trust_remote_code, a model's auto_map, a plugin outside axolotl"),
    "model-unknown": ("error", "a pipeline:// model that does not exist"),
    "model-unavailable": ("error", "a base model the run cannot load: not on the hub, gated without access, a "
                                   "folder without config.json or weights"),
    "model-offline": ("warning", "a base model not in the Hugging Face cache while the hub cannot be asked"),
    "architecture-unknown": ("warning", "the model's config.json is not available offline: estimate and "
                                        "shape rules skipped"),
    "data-missing": ("error", "a dataset file that does not exist"),
    "data-not-file": ("error", "a dataset path that is a directory, a FIFO, a device or a socket (never opened)"),
    "data-encoding": ("error", "a dataset file that is not UTF-8 text (or holds NUL bytes)"),
    "data-format": ("error", "a file axolotl would read as JSON (no other known suffix) that is not JSON"),
    "data-not-local": ("warning", "a dataset that is not a local file (not checked offline)"),
    "data-empty": ("error", "a dataset file with no rows"),
    "data-json": ("error", "a line that is not JSON"),
    "data-row": ("error", "a row that does not have the shape its `type` needs"),
    "data-role": ("error", "a chat message with a role axolotl does not know or the entry does not map"),
    "data-empty-content": ("error", "a message or field with empty content"),
    "data-no-trained-turn": ("error", "a chat row with no trained turn (it adds no loss)"),
    "data-type-unchecked": ("warning", "a dataset type or file format whose rows the check cannot read"),
    "data-duplicate": ("warning", "the same row twice in one file"),
    "data-leakage": ("error", "a test row (or its prompt) that is also in training"),
    "data-too-long": ("warning", "rows longer than sequence_len (axolotl drops or truncates them)"),
    "tokenizer-unavailable": ("warning", "the tokenizer is not available offline: token lengths not checked"),
    # the `pipeline:` section (pipeline.core.section owns its schema)
    "pipeline-unknown": ("error", "a key the pipeline: section does not have (it would be ignored)"),
    "pipeline-shape": ("error", "a pipeline: setting of the wrong shape"),
    "bounds-unknown": ("error", "a bound that does not exist (it would never be judged)"),
    "bounds-shape": ("error", "a bound whose limit is not a number (or [min, max])"),
    "eval-settings": ("error", "an unknown or malformed pipeline.evaluate setting"),
    "eval-gates": ("error", "an unknown evaluate gate, or one that is not a number"),
    "eval-data-missing": ("error", "a pipeline.evaluate file (style_terms, heldout) that does not exist"),
}


#: warnings of `pipeline check` (which may run elsewhere than the training) about what this machine lacks,
#: which stop `smoke` and `train`: they run here
STOPS_A_RUN = {"model-offline", "axolotl-needs-package"}


def severity(rule_id: str, default: str = "error") -> str:
    """The severity of a rule, as declared here."""
    return RULES.get(rule_id, (default, ""))[0]

Check = Callable[["Context"], Iterable[tuple[tuple[str | int, ...], str]]]
CHECKS: list[tuple[str, str, Check]] = []


def rule(rule_id: str, severity: str, description: str) -> Callable[[Check], Check]:
    """Register a config rule: it yields (key path for the line, message)."""

    def register(fn: Check) -> Check:
        RULES[rule_id] = (severity, description)
        CHECKS.append((rule_id, severity, fn))
        return fn

    return register
