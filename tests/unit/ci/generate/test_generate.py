"""`dockmoat generate`: every system and mode parses and passes `dockmoat audit`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dockmoat.ci.audit import Severity, audit_paths, audit_text
from dockmoat.ci.audit.groovy import tokenize
from dockmoat.ci.audit.yamlsrc import load
from dockmoat.ci.generate import (
    Mode,
    Options,
    System,
    default_filename,
    generate,
    structure_problems,
)
from dockmoat.cli import main

COMBINATIONS = list(itertools.product(System, Mode))
_ID = [f"{s.value}-{m.value}" for s, m in COMBINATIONS]


def _audit(system: System, text: str) -> list[tuple[str, str]]:
    findings = audit_text(text, default_filename(system))
    return [(f.rule.id, f.severity.value) for f in findings]


@pytest.mark.parametrize(("system", "mode"), COMBINATIONS, ids=_ID)
def test_parses_and_audit_finds_nothing_high(system: System, mode: Mode) -> None:
    text = generate(Options(system=system, mode=mode))
    assert structure_problems(system, text) == []
    findings = _audit(system, text)
    assert all(severity != Severity.HIGH.value for _, severity in findings), findings
    # What remains is the one accepted cost of classic DinD, said in the file's comments
    # (GitLab's is its DinD service, which needs a privileged runner).
    expected = []
    if mode is Mode.DIND:
        cost = "gitlab-dind-service" if system is System.GITLAB else "dind-privileged"
        expected = [(cost, "medium")]
    assert findings == expected
    if expected and system is not System.GITLAB:
        assert "dind-privileged" in text


@pytest.mark.parametrize(("system", "mode"), COMBINATIONS, ids=_ID)
def test_audit_detects_the_file_by_its_usual_name(
    system: System, mode: Mode, tmp_path: Path
) -> None:
    path = tmp_path / default_filename(system)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generate(Options(system=system, mode=mode)))
    result = audit_paths([str(path)])
    assert result.errors == []
    assert result.exit_code == 0


@pytest.mark.parametrize(("system", "mode"), COMBINATIONS, ids=_ID)
def test_knobs_reach_the_output(system: System, mode: Mode) -> None:
    options = Options(
        system=system,
        mode=mode,
        dind_image="mirror.local:5000/docker:26.1.4-dind",
        job_image="mirror.local:5000/docker:26.1.4-cli",
        dockmoat_image="mirror.local:5000/dockmoat:9.9.9",
        registry="registry.corp.example/team",
        image_name="svc",
        test_command="make check",
        memory="3g",
        cpus=1.5,
        pids_limit=999,
        socket="/run/dockmoat/jobs/ci.sock",
        wait_seconds=17,
    )
    text = generate(options)
    assert "mirror.local:5000/docker:26.1.4-cli" in text
    assert "registry.corp.example/team/svc" in text
    assert "make check" in text
    assert " 17" in text  # the bounded wait
    if mode is Mode.DIND:
        assert "mirror.local:5000/docker:26.1.4-dind" in text
        if system is not System.GITLAB:
            assert "3g" in text and "1.5" in text and "999" in text
    elif system is System.COMPOSE:
        assert "mirror.local:5000/dockmoat:9.9.9" in text
    else:
        assert "/run/dockmoat/jobs/ci.sock" in text
    assert structure_problems(system, text) == []
    assert all(sev != "high" for _, sev in _audit(system, text))


def test_compose_dind_details() -> None:
    doc = load(generate(Options(system=System.COMPOSE, mode=Mode.DIND)))
    dind, runner = doc["services"]["dind"], doc["services"]["runner"]
    assert dind["image"] == "docker:27.3.1-dind"
    assert dind["environment"]["DOCKER_TLS_CERTDIR"] == "/certs"
    assert "dind-certs-client:/certs/client" in dind["volumes"]
    assert "dind-certs-client:/certs/client:ro" in runner["volumes"]
    assert (dind["mem_limit"], dind["cpus"], dind["pids_limit"]) == ("4g", 2, 4096)
    assert dind["healthcheck"]["test"] == ["CMD", "docker", "info"]
    assert runner["depends_on"]["dind"]["condition"] == "service_healthy"
    assert runner["environment"]["DOCKER_HOST"] == "tcp://dind:2376"
    assert runner["environment"]["DOCKER_TLS_VERIFY"] == "1"
    script = runner["command"][2]
    assert "until docker info" in script and "$$IMAGE" in script


def test_compose_guarded_shares_only_the_socket_directory() -> None:
    doc = load(generate(Options(system=System.COMPOSE, mode=Mode.GUARDED)))
    guard, runner = doc["services"]["dockmoat"], doc["services"]["runner"]
    assert guard["image"] == "dockmoat/dockmoat:0.1.0"
    assert list(guard["command"][:3]) == [
        "serve",
        "--listen",
        "unix:///run/dockmoat/guarded/docker.sock",
    ]
    assert "tcp://" not in " ".join(guard["command"])
    assert "/var/run/docker.sock:/var/run/docker.sock" in guard["volumes"]
    assert runner["volumes"][0] == "dockmoat-socket:/run/dockmoat/guarded"
    assert not any("docker.sock:" in v for v in runner["volumes"])
    assert runner["environment"]["DOCKER_HOST"] == "unix:///run/dockmoat/guarded/docker.sock"
    assert runner["depends_on"]["dockmoat"]["condition"] == "service_healthy"
    assert "privileged" not in guard


def test_gitlab_dind_details() -> None:
    doc = load(generate(Options(system=System.GITLAB, mode=Mode.DIND)))
    assert doc["variables"]["DOCKER_HOST"] == "tcp://docker:2376"
    assert doc["variables"]["DOCKER_TLS_VERIFY"] == "1"
    service = doc["build"]["services"][0]
    assert (service["name"], service["alias"]) == ("docker:27.3.1-dind", "docker")
    assert "until docker info" in doc["build"]["before_script"][0]


def test_github_dind_details() -> None:
    doc = load(generate(Options(system=System.GITHUB, mode=Mode.DIND)))
    job = doc["jobs"]["build"]
    options = job["services"]["dind"]["options"]
    for flag in ("--privileged", "--memory 4g", "--cpus 2", "--pids-limit 4096", "--health-cmd"):
        assert flag in options
    assert job["container"]["env"]["DOCKER_TLS_VERIFY"] == "1"
    assert "dind-certs-client:/certs/client:ro" in job["container"]["volumes"]


def test_jenkins_structure_check_catches_breakage() -> None:
    text = generate(Options(system=System.JENKINS, mode=Mode.DIND))
    assert structure_problems(System.JENKINS, text) == []
    broken = text.replace("stages {", "stages ", 1)
    assert structure_problems(System.JENKINS, broken)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dind_image", "docker:27'; evil"),
        ("job_image", "docker:27\nfoo: bar"),
        ("registry", "reg.example/'x"),
        ("memory", "lots"),
        ("cpus", 0),
        ("pids_limit", 1),
        ("socket", "relative.sock"),
        ("test_command", "a\nb"),
        ("wait_seconds", 0),
    ],
)
def test_bad_options_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Options.model_validate({"system": "compose", "mode": "dind", field: value})


_COMMANDS = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60)


@settings(max_examples=40, deadline=None)
@given(command=_COMMANDS)
def test_any_test_command_keeps_every_file_valid(command: str) -> None:
    expected = 'docker run --rm "$IMAGE" ' + command
    for system, mode in COMBINATIONS:
        try:
            options = Options(system=system, mode=mode, test_command=command)
        except ValidationError:
            # Refused up front: only line breaks and control characters are.
            assert any(
                ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ord(ch) in (0xFFFE, 0xFFFF)
                for ch in command
            )
            return
        text = generate(options)
        assert structure_problems(system, text) == [], (system, mode, command)
        # The command arrives exactly as given, whatever quotes or comment signs it holds.
        if system is System.JENKINS:
            assert expected in [t.text for t in tokenize(text) if t.kind == "string"]
            continue
        doc = load(text)
        if system is System.GITLAB:
            assert doc["build"]["script"][1] == expected
        elif system is System.GITHUB:
            assert doc["jobs"]["build"]["steps"][3]["run"] == expected
        else:
            script = doc["services"]["runner"]["command"][2]
            assert expected.replace("$", "$$") in script.splitlines()


def test_cli_prints_and_writes(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["generate", "compose", "--mode", "guarded"])
    assert result.exit_code == 0
    assert result.stdout == generate(Options(system=System.COMPOSE, mode=Mode.GUARDED))
    out = tmp_path / "ci" / ".gitlab-ci.yml"
    result = runner.invoke(main, ["generate", "gitlab", "--mode", "dind", "-o", str(out)])
    assert result.exit_code == 0 and out.exists()
    audited = runner.invoke(main, ["audit", "--format", "json", str(out)])
    rules = [(d["rule"], d["severity"]) for d in json.loads(audited.stdout)]
    assert (audited.exit_code, rules) == (0, [("gitlab-dind-service", "medium")])


def test_cli_default_mode_is_dind() -> None:
    result = CliRunner().invoke(main, ["generate", "github"])
    assert result.exit_code == 0 and "docker:27.3.1-dind" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "compose", "--memory", "lots"], "--memory: Value error, not a memory size"),
        (["generate", "jenkins", "--job-image", "a b"], "--job-image: Value error, not an image"),
    ],
)
def test_cli_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_cli_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["generate", "travis"]).exit_code == 2
    assert runner.invoke(main, ["generate", "gitlab", "--mode", "socket"]).exit_code == 2
