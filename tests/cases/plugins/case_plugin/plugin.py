"""The plugin class: it only declares its arguments."""

from axolotl.integrations.base import BasePlugin


class CasePlugin(BasePlugin):
    def get_input_args(self) -> str:
        return "case_plugin.args.CaseArgs"
