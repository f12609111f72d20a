"""Stopping a `dockmoat serve` a test started: SIGTERM (it drains), then SIGKILL."""

from __future__ import annotations

import signal
import subprocess


def terminate(process: subprocess.Popen[bytes], grace: float = 30) -> int:
    """SIGTERM, wait up to `grace` seconds, then kill; the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
