"""How evaluate scores a generation, as plain text: the coined style terms it uses (whole words, case as
written) and how much of the source's content it keeps. Evaluate's helper, beside report.py; no model."""

from __future__ import annotations

import re
from typing import Any

STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just me more
most my myself no nor not now of off on once only or other our ours ourselves out over own same she
should so some such than that the their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves
""".split())  # noqa: SIM905


def found_terms(text: str, terms: list[str]) -> list[str]:
    """Coined terms used in `text`: case as written, whole words (so "Loomwaters" does not count)."""
    return [t for t in terms if re.search(_term_pattern([t]), text)]


def term_spans(text: str, terms: list[str]) -> list[list[int]]:
    """[start, end) of every coined term in `text`, in order (the report highlights these)."""
    if not terms:
        return []
    return [[m.start(), m.end()] for m in re.finditer(_term_pattern(terms), text)]


def _term_pattern(terms: list[str]) -> str:
    longest_first = sorted(terms, key=len, reverse=True)  # "Hollow Bloom" before a shorter term inside it
    return rf"(?<![\w-])(?:{'|'.join(map(re.escape, longest_first))})(?![\w-])"


def words(text: str) -> set[str]:
    return {w.lower().removesuffix("'s") for w in re.findall(r"[A-Za-z0-9']+", text)}


def content_recall(source: str, text: str) -> float:
    """Share of the source's content words (not stop words) that the text repeats."""
    wanted = words(source) - STOP_WORDS
    return len(wanted & words(text)) / len(wanted) if wanted else 1.0


def reference_scores(examples: list[Any], terms: list[str]) -> dict[str, float]:
    refs = [ex.reference for ex in examples]
    return {"style": sum(bool(found_terms(r, terms)) for r in refs) / len(refs),
            "content": sum(content_recall(ex.source, ex.reference) for ex in examples) / len(examples)}
