"""Reading a gateway's audit log from a test: entries are written in batches
(`dockmoat.gateway.audit.BATCH_WINDOW` apart under load), so wait until it is quiet."""

from __future__ import annotations

import json
import time
from pathlib import Path

from dockmoat.gateway.audit import BATCH_WINDOW


def settled_entries(path: Path, timeout: float = 10.0) -> list[dict[str, object]]:
    """The log's entries once it has not grown for a few batch windows."""
    quiet = 4 * BATCH_WINDOW
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = path.stat().st_size if path.exists() else 0
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(BATCH_WINDOW / 2)
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
