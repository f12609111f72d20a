"""Shell-safe output (issue 21): a failing `dind up` fails the `eval` of its output too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from dockmoat.cli import main

DOCKMOAT = Path(sys.executable).parent / "dockmoat"


def test_a_failing_dind_up_prints_a_line_that_fails_the_eval() -> None:
    result = CliRunner().invoke(main, ["dind", "up", "x", "--memory", "lots", "--no-pool"])
    assert result.exit_code == 2
    assert result.stdout.startswith("false  # dockmoat dind up failed")


def test_eval_of_a_failing_up_fails_and_the_documented_form_stops(tmp_path: Path) -> None:
    up = f"{DOCKMOAT} dind up x --memory lots --no-pool 2>/dev/null"
    script = f'eval "$({up})"; echo "eval=$?"; env=$({up}) && eval "$env"; echo "assign=$?"'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert "eval=1" in done.stdout, done.stdout + done.stderr
    assert "assign=2" in done.stdout, done.stdout + done.stderr


def test_json_format_prints_nothing_on_failure() -> None:
    result = CliRunner().invoke(
        main, ["dind", "up", "x", "--memory", "lots", "--no-pool", "--format", "json"]
    )
    assert result.exit_code == 2 and result.stdout == ""
