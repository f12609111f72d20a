"""`dockmoat policy show | validate | check` through the real click command."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dockmoat.cli import main


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["policy", *args], env={})
    return result.exit_code, result.output


def test_show_lists_rules() -> None:
    code, out = run("show")
    assert code == 0
    assert "containers.privileged\tcontainers\tyes\t" in out
    assert "containers.no-binds\tcontainers\tno\t" in out
    code, out = run("show", "--profile", "restricted")
    assert "containers.no-binds\tcontainers\tyes\t" in out


def test_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("extends: baseline\ndisable: [containers.links]\n")
    code, out = run("validate", str(good))
    assert code == 0 and "valid" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: baseline\nlimits:\n  pids: {max: many}\n")
    code, out = run("validate", str(bad))
    assert code == 1
    assert "bad.yaml:3: limits.pids.max" in out


def test_check_deny_rewrite_allow(tmp_path: Path) -> None:
    body = tmp_path / "b.json"
    body.write_text(json.dumps({"Image": "b", "HostConfig": {"Binds": ["/:/host"]}}))
    code, out = run(
        "check", "--method", "POST", "--path", "/v1.41/containers/create", "--body", str(body)
    )
    assert code == 1
    assert "DENY containers.bind-mounts" in out
    assert "dockmoat: containers.bind-mounts: " in out
    body.write_text(json.dumps({"Image": "b"}))
    code, out = run(
        "check", "--method", "POST", "--path", "/containers/create", "--body", str(body)
    )
    assert code == 0
    assert "REWRITE containers.pids-limit" in out and '"PidsLimit": 4096' in out
    code, out = run("check", "--method", "GET", "--path", "/v1.41/containers/json?all=1")
    assert code == 0 and "ALLOW" in out
    body.write_bytes(b'{"Image": "b", "image": "c"}')
    code, out = run(
        "check", "--method", "POST", "--path", "/containers/create", "--body", str(body)
    )
    assert code == 1 and "same field" in out


def test_check_reads_the_body_from_stdin() -> None:
    result = CliRunner().invoke(
        main,
        ["policy", "check", "--method", "POST", "--path", "/containers/create", "--body", "-"],
        input='{"Image": "b", "HostConfig": {"CapAdd": ["SYS_ADMIN"]}}',
        env={},
    )
    assert result.exit_code == 1
    assert "DENY containers.capabilities" in result.output
