"""Which build of dockmoat this is: `dockmoat --version`.

A wheel (`pip install .`, the container image) carries `dockmoat/_build.json`, written
by the build hook (hatch_build.py) with the commit and the time it was built from; a
source checkout (`make setup`'s editable install) asks git. Either way the answer
names the version and the commit, so an operator can tell which guard a node runs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from dockmoat import __version__

_HERE = Path(__file__).resolve().parent


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def build() -> dict[str, str]:
    """{"commit", "built", "source"}: from the wheel's build record, else from git."""
    record = _HERE / "_build.json"
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
    except (OSError, ValueError):
        pass
    root = _HERE.parent.parent
    if (root / ".git").exists() and (root / "pyproject.toml").is_file():
        commit = _git(root, "rev-parse", "--short=12", "HEAD")
        if commit is not None:
            dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", "src")
            return {"commit": commit + ("-dirty" if dirty else ""), "source": "checkout"}
    return {"commit": "unknown", "source": "unknown"}


def describe() -> str:
    """One line: `0.1.0 (commit 1955aef0c2d1, wheel built 2026-12-07T06:10:00Z)`."""
    info = build()
    parts = [f"commit {info.get('commit', 'unknown')}"]
    if info.get("source") == "checkout":
        parts.append("source checkout")
    elif info.get("built"):
        parts.append(f"{info.get('source', 'wheel')} built {info['built']}")
    return f"{__version__} ({', '.join(parts)})"
