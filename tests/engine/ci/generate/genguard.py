"""Helpers for generate's engine tests: a real `dockmoat serve` on a private socket."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path

DOCKMOAT = Path(sys.executable).parent / "dockmoat"


@dataclass
class Guard:
    socket: Path
    audit_log: Path
    log: Path


def pings(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(path))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in s.recv(64)
    except OSError:
        return False
