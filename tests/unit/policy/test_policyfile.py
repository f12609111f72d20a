"""The policy file: extends, switches, limits; errors with line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockmoat.errors import ConfigError
from dockmoat.policy.engine import load_policy
from dockmoat.policy.policyfile import parse_bytes, parse_policy_text


def test_full_file(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(
        f"""\
extends: restricted
disable: [containers.no-binds]
enable: []
allow_bind: [{tmp_path}/ws]
runtimes: [runsc]
registries: [registry.internal:5000]
fetch_targets: [https://git.internal/]
limits:
  memory: {{default: 512m, max: 2g}}
  cpus: {{default: 0.5, max: 2}}
  pids: {{default: 1000, max: 2000}}
endpoints: {{CONTAINERS: 1, POST: 1}}
quotas: {{containers: 10}}
"""
    )
    policy = load_policy(policy_file=policy_file, env={"EXEC": "1"})
    assert policy.profile == "restricted"
    enabled = {rule.id for rule in policy.rules if rule.enabled}
    assert "containers.no-binds" not in enabled and "containers.non-root-user" in enabled
    assert policy.settings.allow_bind == (str((tmp_path / "ws").resolve()),)
    assert policy.settings.memory.default == 512 * 1024**2
    assert policy.settings.nano_cpus.default == 500_000_000
    assert policy.settings.pids.maximum == 2000
    assert policy.switches is not None
    assert policy.switches.on("CONTAINERS") and policy.switches.on("EXEC")
    assert not policy.switches.on("IMAGES")


def test_profile_argument_applies_when_the_file_does_not_extend(tmp_path: Path) -> None:
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text("disable: [containers.links]\n")
    assert load_policy("restricted", policy_file=policy_file, env={}).profile == "restricted"
    policy_file.write_text("extends: permissive\n")
    assert load_policy("restricted", policy_file=policy_file, env={}).profile == "permissive"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("extends: nope\n", ":1: extends"),
        ("extends: baseline\ndisable:\n  - containers.nope\n", ":2: disable: no rule has the id"),
        ("limits:\n  memory:\n    max: lots\n", ":3: limits.memory.max"),
        ("limits:\n  pids: {default: -1}\n", ":2: limits.pids.default"),
        ("unknown_key: 1\n", ":1: unknown_key"),
        ("endpoints:\n  FOO: 1\n", ":1: endpoints: unknown endpoint switch 'FOO'"),
        ("allow_bind: [relative/path]\n", ":1: allow_bind"),
        ("extends: [oops\n", ":2: not valid YAML"),
        ("- a list\n", ":1: a policy file is a mapping"),
    ],
)
def test_errors_name_the_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_policy_text(text, "p.yaml")
    assert f"p.yaml{expected}" in str(caught.value)


def test_missing_things_fail_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(policy_file=tmp_path / "missing.yaml", env={})
    with pytest.raises(ConfigError, match="no such folder"):
        load_policy(allow_bind=[tmp_path / "missing"], env={})
    with pytest.raises(ConfigError, match="unknown profile"):
        load_policy("lax", env={})


def test_sizes() -> None:
    assert parse_bytes("2g") == 2 * 1024**3
    assert parse_bytes("512M") == 512 * 1024**2
    assert parse_bytes("1.5k") == 1536
    assert parse_bytes(100) == 100
    with pytest.raises(ValueError, match="size"):
        parse_bytes("x")
