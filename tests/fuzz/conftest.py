"""Fixtures of the fuzz tests; fuzzkit.py holds the profiles, the strategies and the property."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib puts no test folder on sys.path: the fuzz tests share one module of strategies
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzkit  # noqa: E402,F401 - loads the Hypothesis profile before any test module is imported


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """pipeline://tiny-llama's tokenizer, built once (the data readers measure rows with it)."""
    from transformers import PreTrainedTokenizerFast

    from pipeline.core import models

    return PreTrainedTokenizerFast.from_pretrained(str(models.resolve("pipeline://tiny-llama")))
