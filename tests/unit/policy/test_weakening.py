"""Loud weakening (issue 21): what a policy file disables or loosens is named; a file
contradicting --profile is refused; limits are consistent; the docs' example works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from dockmoat.cli import main
from dockmoat.errors import ConfigError
from dockmoat.policy import trial
from dockmoat.policy.decision import Allow, Deny, Rewrite, WouldDeny
from dockmoat.policy.engine import load_policy
from dockmoat.policy.weakening import check_extends, weakenings

DOCS = Path(__file__).resolve().parents[3] / "docs" / "policy.md"
PRIVILEGED = b'{"Image": "busybox", "HostConfig": {"Privileged": true}}'


def _validate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["policy", "validate", *args], env={})
    return result.exit_code, result.output


def test_disabled_rules_and_bind_of_root_are_named(tmp_path: Path) -> None:
    policy = tmp_path / "weak.yaml"
    policy.write_text(
        "extends: baseline\n"
        "disable: [containers.privileged, containers.bind-mounts]\n"
        "allow_bind: [/]\n"
    )
    code, out = _validate(str(policy))
    assert code == 0, out
    assert "valid" in out
    assert "weakens baseline: disables containers.privileged" in out
    assert "weakens baseline: disables containers.bind-mounts" in out
    assert "allow_bind: / lets containers bind every file of the host" in out
    assert _validate("--strict", str(policy))[0] == 1


def test_a_file_that_only_tightens_weakens_nothing(tmp_path: Path) -> None:
    policy = tmp_path / "tight.yaml"
    policy.write_text("extends: baseline\nenable: [containers.no-new-privileges]\n")
    assert weakenings(load_policy(policy_file=policy, env={})) == []
    code, out = _validate("--strict", str(policy))
    assert code == 0 and "weakens" not in out


def test_extends_contradicting_the_profile_is_refused_unless_overridden(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("extends: baseline\n")
    code, out = _validate("--profile", "restricted", str(policy))
    assert code == 1
    assert "extends: baseline contradicts --profile restricted (it is looser)" in out
    assert "--policy-overrides-profile" in out
    assert _validate("--profile", "restricted", "--policy-overrides-profile", str(policy))[0] == 0
    assert _validate("--profile", "baseline", str(policy))[0] == 0
    document = load_policy(policy_file=policy, env={}).file
    check_extends(document, "p.yaml", None, override=False)  # no --profile given: fine
    with pytest.raises(ConfigError):
        check_extends(document, "p.yaml", "restricted", override=False)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("memory: {default: 8g, max: 2g}", "the default 8g is above the max 2g"),
        ("cpus: {default: 4, max: 2}", "the default 4.0 is above the max 2.0"),
        ("pids: {default: 5000, max: 100}", "the default 5000 is above the max 100"),
        ("pids: {max: 100}", "the default 4096 (implicit) is above the max 100"),
    ],
)
def test_a_default_above_its_max_is_invalid(tmp_path: Path, limits: str, message: str) -> None:
    policy = tmp_path / "limits.yaml"
    policy.write_text(f"extends: baseline\nlimits:\n  {limits}\n")
    code, out = _validate(str(policy))
    assert code == 1
    assert "limits.yaml:3: limits." in out and message in out, out


def _docs_example(tmp_path: Path) -> Path:
    text = DOCS.read_text()
    match = re.search(r"## The policy file\n\n```yaml\n(.*?)```", text, re.S)
    assert match, "docs/policy.md lost its example policy file"
    example = tmp_path / "example.yaml"
    example.write_text(match.group(1))
    return example


def test_the_docs_example_validates_as_written(tmp_path: Path) -> None:
    code, out = _validate(str(_docs_example(tmp_path)))
    assert code == 0, out
    assert "valid (extends baseline" in out
    assert "disables containers.links" in out


def test_the_docs_example_keeps_images_build_and_info_open(tmp_path: Path) -> None:
    policy = load_policy(policy_file=_docs_example(tmp_path), env={})
    for method, target in (("GET", "/images/json"), ("GET", "/info"), ("POST", "/build")):
        decision = policy.evaluate(trial.routed(method, target, listener="cli"))
        assert isinstance(decision, Allow | Rewrite), (target, decision)
    refused = policy.evaluate(
        trial.with_json_body(trial.routed("POST", "/containers/create", "cli"), PRIVILEGED)
    )
    assert isinstance(refused, Deny) and refused.rule == "containers.privileged"


def test_warn_mode_forwards_what_would_be_denied(tmp_path: Path) -> None:
    policy_file = tmp_path / "warn.yaml"
    policy_file.write_text("extends: baseline\nmode: warn\n")
    policy = load_policy(policy_file=policy_file, env={})
    request = trial.with_json_body(trial.routed("POST", "/containers/create", "cli"), PRIVILEGED)
    decision = policy.evaluate(request)
    assert type(decision) is WouldDeny and decision.rule == "containers.privileged"
    assert "mode: warn" in " ".join(weakenings(policy))
    enforcing = load_policy(env={})
    assert isinstance(enforcing.evaluate(request), Deny)
    warned = load_policy(env={}, warn=True)
    assert type(warned.evaluate(request)) is WouldDeny
    # A derived (per-job) policy keeps the mode.
    assert type(warned.derive(disable=("containers.links",)).evaluate(request)) is WouldDeny


def test_job_open_names_what_its_policy_weakens_on_stderr(tmp_path: Path) -> None:
    policy = tmp_path / "job.yaml"
    policy.write_text("extends: baseline\ndisable: [containers.privileged]\n")
    result = CliRunner().invoke(
        main,
        ["job", "open", "j", "--policy", str(policy), "--control", str(tmp_path / "none.sock")],
    )
    assert result.exit_code == 3  # no serve to talk to (docs/exit-codes.md)
    assert "weakens baseline: disables containers.privileged" in result.stderr
    assert "DOCKER_HOST" not in result.stdout


def test_a_plugin_lookup_answers_as_dockerd_does_for_a_missing_plugin() -> None:
    policy = load_policy(env={})
    decision = policy.evaluate(trial.routed("GET", "/v1.41/plugins/some/thing/json", "cli"))
    assert isinstance(decision, Deny) and decision.status == 404
    assert decision.message == 'plugin "some/thing" not found'
    other = policy.evaluate(trial.routed("GET", "/v1.41/plugins", "cli"))
    assert isinstance(other, Deny) and other.status == 403 and other.rule == "system.plugins"
