"""How times are shown to people (the report, the spot check, the audit log): local time, to the second."""

from __future__ import annotations

import time


def when(t: float | None) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS`` in local time; "" for none."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""
