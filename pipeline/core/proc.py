"""Small process helpers every stage needs once: is a recorded process alive (the one rule), and SIGTERM as
Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Mapping
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


def recorded_alive(record: Mapping[str, Any]) -> bool | None:
    """Whether the process a record names (a manifest's or a lock's `pid` and `host`) is alive: the one rule.

    True or False only where it ran on this host and its pid is known; None where this host cannot tell: no
    pid, another host, or no host at all (a missing host is not taken for this one). This process itself
    counts as alive."""
    pid, host = record.get("pid"), record.get("host")
    if not isinstance(host, str) or host != socket.gethostname():
        return None
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    return pid_alive(pid)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """Stop on SIGTERM exactly as on Ctrl-C: the stage's KeyboardInterrupt path cleans up and exits 130."""
    signal.signal(signal.SIGTERM, _interrupt)
