"""One exit code per class of error, the same across commands (docs/exit-codes.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import dockmoat.cli.policy as policy_cli
from dockmoat.cli import main


def _run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=input, env={})
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("policy", "show", "--policy", "/nonexistent/policy.yaml"),
        ("job", "open", "Bad Name", "--control", "/nonexistent.sock"),
        ("job", "open", "ok", "--ttl", "forever", "--control", "/nonexistent.sock"),
        ("job", "open", "ok", "--max-containers", "-1", "--control", "/nonexistent.sock"),
        ("serve", "--profile", "nope"),
        ("serve", "--idle-timeout", "-1"),
    ],
)
def test_bad_input_is_2(args: tuple[str, ...]) -> None:
    code, err = _run(*args)
    assert code == 2, err


def test_check_of_a_request_the_gateway_refuses_as_malformed_is_a_no() -> None:
    code, _err = _run(
        "policy", "check", "--method", "POST", "--path", "/containers/create", "--body", "-",
        input='{"a":',
    )  # fmt: skip
    assert code == 1
    assert _run("policy", "check", "--method", "GET", "--path", "/%zz")[0] == 1


@pytest.mark.parametrize(
    "args",
    [("job", "ls", "--control", "/nonexistent.sock"), ("job", "close", "j", "--control", "/x")],
)
def test_serve_unreachable_is_3(args: tuple[str, ...]) -> None:
    code, err = _run(*args)
    assert code == 3 and "is `dockmoat serve` running" in err


def test_a_no_is_1(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("limits:\n  memory: {default: 8g, max: 2g}\n")
    assert _run("policy", "validate", str(bad))[0] == 1
    body = '{"Image": "b", "HostConfig": {"Privileged": true}}'
    args = ("policy", "check", "--method", "POST", "--path", "/containers/create", "--body", "-")
    assert _run(*args, input=body)[0] == 1


def test_a_bug_is_one_line_and_70(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(policy_cli, "_load", broken)
    code, err = _run("policy", "show")
    assert code == 70
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("dockmoat: internal error (RuntimeError: something nobody expected)")


def test_an_os_error_is_one_line_and_3(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> None:
        raise PermissionError(13, "Permission denied", "/var/lib/dockmoat")

    monkeypatch.setattr(policy_cli, "_load", broken)
    code, err = _run("policy", "show")
    assert code == 3 and err == "dockmoat: Permission denied (/var/lib/dockmoat)\n"
