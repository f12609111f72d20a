"""`pip install .` in a fresh virtual environment gives a working `dockmoat` (slow: it
builds the wheel and installs the locked dependencies from the local wheel cache or
the package index this machine uses).

The installed command names its build (the commit the wheel was built from), answers
`--help`, generates a file, and prints shell completion with click's own mechanism.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


def _run(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=600, env=env, check=False
    )


def test_pip_install_gives_a_working_dockmoat(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    pip = venv / "bin/pip"
    wheels = ROOT / "deploy/image/wheels"
    # Offline when `make image` fetched the locked wheels (and hatchling): no index scan.
    find_links = ["--no-index", "--find-links", str(wheels)] if any(wheels.glob("*.whl")) else []
    deps = _run(pip, "install", "--quiet", "--disable-pip-version-check", *find_links,
                "-r", ROOT / "deploy/image/requirements.txt")  # fmt: skip
    assert deps.returncode == 0, deps.stderr[-3000:]
    # The way a user installs a checkout (the locked dependencies are already there).
    own = _run(pip, "install", "--quiet", "--disable-pip-version-check", *find_links, ROOT)
    assert own.returncode == 0, own.stderr[-3000:]
    dockmoat = venv / "bin/dockmoat"
    version = _run(dockmoat, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("dockmoat, version 0.1.0 (commit ")
    assert "wheel built" in version.stdout
    # The commit the wheel was built from (others may commit meanwhile: not always HEAD).
    commit = version.stdout.split("(commit ", 1)[1].split(",", 1)[0]
    assert len(commit) == 12
    assert _run("git", "-C", ROOT, "cat-file", "-e", f"{commit}^{{commit}}").returncode == 0
    assert _run(dockmoat, "--help").returncode == 0
    generated = _run(dockmoat, "generate", "compose", "--mode", "guarded")
    assert generated.returncode == 0 and "services:" in generated.stdout
    # Shell completion (docs/deploy.md): click's _DOCKMOAT_COMPLETE protocol.
    env = {**os.environ, "_DOCKMOAT_COMPLETE": "bash_source"}
    completion = _run(dockmoat, env=env)
    assert completion.returncode == 0 and "_dockmoat_completion" in completion.stdout
    words = _run(
        dockmoat,
        env={**os.environ, "_DOCKMOAT_COMPLETE": "bash_complete", "COMP_WORDS": "dockmoat gen",
             "COMP_CWORD": "1"},
    )  # fmt: skip
    assert "generate" in words.stdout
