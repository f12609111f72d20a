"""The engine's /etc/docker/daemon.json, changed by merging: every key the harness does
not set is kept, and the file is replaced atomically (a reader never sees half of it).
Used by the CAP_SYS_RESOURCE runtime wrapper (runtime_workaround.py) and the extra
runtimes of `dind up --runtime` (runtimes.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

DAEMON_JSON = Path("/etc/docker/daemon.json")


def with_runtime(current: dict[str, object], name: str, path: str) -> dict[str, object]:
    """daemon.json's object with `runtimes[name] = {path}`; every other key kept (and
    `current` itself not changed)."""
    merged = dict(current)
    runtimes = merged.get("runtimes")
    runtimes = dict(runtimes) if isinstance(runtimes, dict) else {}
    runtimes[name] = {"path": path}
    merged["runtimes"] = runtimes
    return merged


def merge_daemon_json(
    config: Path,
    merge: Callable[[dict[str, object]], dict[str, object]],
    error: type[Exception] = ValueError,
) -> bool:
    """Write `merge(current)` over `config` (atomically) unless it is what the file holds
    already; True if the file changed. A file that is not a JSON object is left as it is
    and raises `error` saying so (a missing file counts as `{}`)."""
    try:
        current = json.loads(config.read_text()) if config.exists() else {}
    except ValueError as exc:
        raise error(f"{config} is not valid JSON; fix it first: {exc}") from exc
    if not isinstance(current, dict):
        raise error(f"{config} must hold a JSON object")
    merged = merge(current)
    if merged == current:
        return False
    config.parent.mkdir(parents=True, exist_ok=True)
    tmp = config.with_name(config.name + ".dockmoat-tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    os.replace(tmp, config)
    return True
