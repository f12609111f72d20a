"""Build hook: record which commit a wheel was built from (`dockmoat --version`).

The commit is `$DOCKMOAT_BUILD_REF` when set (the image build passes it, as the build
context has no .git), else `git rev-parse` of this checkout, else "unknown".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _commit(root: str) -> str:
    ref = os.environ.get("DOCKMOAT_BUILD_REF", "").strip()
    if ref:
        return ref
    try:
        done = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


class BuildInfoHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return  # an editable install asks git at run time
        self._tmp = tempfile.mkdtemp(prefix="dockmoat-build-")
        record = Path(self._tmp) / "_build.json"
        built = os.environ.get("DOCKMOAT_BUILD_DATE", "").strip() or datetime.now(UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        source = os.environ.get("DOCKMOAT_BUILD_SOURCE", "").strip() or "wheel"
        record.write_text(
            json.dumps({"commit": _commit(self.root), "built": built, "source": source}) + "\n",
            encoding="utf-8",
        )
        build_data["force_include"][str(record)] = "dockmoat/_build.json"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
