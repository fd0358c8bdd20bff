"""Small process helpers every stage needs once: is a recorded pid alive, and SIGTERM as Ctrl-C."""

from __future__ import annotations

import os
import signal
from typing import Any


def pid_alive(pid: Any) -> bool:
    """Whether a process with this pid exists on this host (a pid we may not signal still exists)."""
    if isinstance(pid, str):
        pid = int(pid) if pid.isdigit() else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """Stop on SIGTERM exactly as on Ctrl-C: the stage's KeyboardInterrupt path cleans up and exits 130."""
    signal.signal(signal.SIGTERM, _interrupt)
