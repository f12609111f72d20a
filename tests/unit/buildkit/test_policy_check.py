"""`dockmoat policy check --method GRPC`: a BuildKit call decided without a daemon."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from dockmoat.buildkit.wire import len_field, string_map_field
from dockmoat.cli import main

SOLVE = "/moby.buildkit.v1.Control/Solve"


def check(tmp_path: Path, path: str, message: bytes, *extra: str) -> tuple[int, str]:
    body = tmp_path / "message.bin"
    body.write_bytes(message)
    args = ["policy", "check", *extra, "--method", "GRPC", "--path", path, "--body", str(body)]
    result = CliRunner().invoke(main, args, env={})
    return result.exit_code, result.output


def test_a_solve_with_host_networking_is_denied(tmp_path: Path) -> None:
    code, out = check(tmp_path, SOLVE, len_field(1, b"r") + len_field(9, b"network.host"))
    assert code == 1
    assert "route: buildkit.control_solve" in out
    assert "DENY build.network-host" in out


def test_a_plain_solve_is_allowed_and_a_policy_file_can_switch_a_rule_off(
    tmp_path: Path,
) -> None:
    plain = len_field(1, b"r") + string_map_field(7, "filename", "Dockerfile")
    code, out = check(tmp_path, SOLVE, plain)
    assert code == 0, out
    assert "REWRITE build.sources" in out
    assert "source policy" in out
    policy = tmp_path / "p.yaml"
    policy.write_text("disable: [build.network-host]\n")
    host = len_field(1, b"r") + len_field(9, b"network.host")
    code, out = check(tmp_path, SOLVE, host, "--policy", str(policy))
    assert code == 0, out
    assert "DENY" not in out


def test_unknown_calls_and_unreadable_messages_are_refused(tmp_path: Path) -> None:
    assert check(tmp_path, "/moby.buildkit.v1.Control/Session", b"")[0] != 0
    assert check(tmp_path, SOLVE, b"\xff\xff")[0] != 0
