"""Which device a command defaults to is asked without importing torch where CUDA is switched off."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import sys; from pipeline.checks.target import cuda_answers; print(cuda_answers(), 'torch' in sys.modules)"


def test_cuda_switched_off_is_answered_without_torch() -> None:
    for visible in ("", "-1"):
        out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, "CUDA_VISIBLE_DEVICES": visible},
                             capture_output=True, text=True, check=True).stdout.split()
        assert out == ["False", "False"]


def test_the_answer_agrees_with_torch() -> None:
    import torch

    from pipeline.checks.target import cuda_answers

    assert cuda_answers() == torch.cuda.is_available()
