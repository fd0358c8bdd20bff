"""The plugin's settings: a key of its own, which the check must know without running this file."""

from pydantic import BaseModel


class CaseArgs(BaseModel):
    case_greeting: str | None = None
