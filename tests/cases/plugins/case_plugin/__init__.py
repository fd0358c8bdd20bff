"""A plugin outside axolotl, for the check's cases. Importing it leaves a mark (where CASE_PLUGIN_MARK
names a file): `pipeline check` reads plugins and must never run them."""

import os
from pathlib import Path

if os.environ.get("CASE_PLUGIN_MARK"):
    Path(os.environ["CASE_PLUGIN_MARK"]).write_text("imported\n")

from .plugin import CasePlugin  # noqa: E402

__all__ = ["CasePlugin"]
