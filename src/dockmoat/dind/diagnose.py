"""Why a nested daemon did not come up: the telling lines of its log and the
troubleshooting hints they point to."""

from __future__ import annotations

from typing import Any

import docker.errors

LOG_LINES = 15
LOG_SCAN = 300


def telling_lines(logs: str, limit: int = LOG_LINES) -> list[str]:
    """The log lines that explain a failure: dockerd's info chatter (grpc state
    changes by the dozen) hides the one error line, so leave info/debug out when
    anything else is there; the very last line (often the fatal one) always stays."""
    lines = [line for line in logs.splitlines() if line.strip()]
    telling = [line for line in lines if "level=info" not in line and "level=debug" not in line]
    if not telling:
        return lines[-limit:]
    if lines and lines[-1] not in telling[-limit:]:
        return [*telling[-(limit - 1) :], lines[-1]]
    return telling[-limit:]


def hint_for(logs: str) -> str:
    """The seed's troubleshooting cases, picked by what the nested daemon logged."""
    lower = logs.lower()
    hints = []
    if (
        "overlay" in lower
        or "storage" in lower
        or "graphdriver" in lower
        or "driver not supported" in lower
    ):
        hints.append(
            "storage driver: the data root is a named volume so overlay2 can nest; if the "
            "engine's volume filesystem cannot carry it, pass --storage-driver vfs"
        )
    if any(
        w in lower
        for w in (
            "permission denied",
            "operation not permitted",
            "privileged",
            "iptables",
            "cgroup",
            "mount",
        )
    ):
        hints.append(
            "privileges: the nested daemon needs a privileged container (the default) or a "
            "runtime that allows nested containers (--runtime sysbox-runc)"
        )
    if "tls" in lower or "certificate" in lower or "x509" in lower:
        hints.append("certificates: check the state directory's CA and run `dockmoat doctor`")
    if "tuntap" in lower or "/dev/net/tun" in lower:
        hints.append(
            "rootless: /dev/net/tun on the engine's host must be readable and writable by "
            "every user (mode 0666, what udev sets): rootlesskit makes its tap device as the "
            "image's unprivileged user"
        )
    if "rootlesskit" in lower:
        hints.append(
            "rootless: --rootless needs a rootless DinD image such as docker:dind-rootless"
        )
    if not hints:
        hints.append(
            "common causes: storage driver incompatibility (--storage-driver), missing "
            "privileges (--runtime), TLS certificate issues (`dockmoat doctor`)"
        )
    return "\n".join(f"hint: {h}" for h in hints)


def failure_report(api: Any, container: str) -> str:
    """The daemon container's telling log lines and the hints for them (for an error)."""
    try:
        raw = api.logs(container, tail=LOG_SCAN)
        logs = raw.decode(errors="replace") if isinstance(raw, bytes) else ""
    except docker.errors.APIError:
        logs = ""
    shown = "\n".join(f"  | {line}" for line in telling_lines(logs))
    hint = hint_for("\n".join(telling_lines(logs, LOG_SCAN)))
    return f"the nested daemon's log (last telling lines):\n{shown or '  (empty)'}\n{hint}"
