"""The readers read what the CI systems read, and no input makes the audit crash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from audit_expect import expected_from_annotations
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockmoat.ci.audit import Kind, Severity, audit_paths, audit_source, audit_text
from dockmoat.ci.audit.groovy import tokenize
from dockmoat.ci.audit.yamlsrc import load

READERS = Path(__file__).resolve().parents[1] / "fixtures" / "readers"


@pytest.mark.parametrize("name", ["merge-keys.gitlab-ci.yml", "Jenkinsfile.continuations"])
def test_valid_files_that_used_to_stop_the_audit(name: str) -> None:
    result = audit_paths([str(READERS / name)])
    assert result.errors == []
    expected = expected_from_annotations(READERS / name)
    assert {(f.line, f.rule.id) for f in result.findings} == expected
    assert result.exit_code == 1


def test_duplicate_merge_keys_later_wins_as_in_gitlab() -> None:
    doc = load("a: &a {x: 1, y: 1}\nb: &b {x: 2}\nj:\n  <<: *a\n  <<: *b\n  z: 3\n")
    assert dict(doc["j"]) == {"z": 3, "x": 2, "y": 1}


def test_duplicate_keys_keep_the_last_value() -> None:
    doc = load("job:\n  privileged: false\n  privileged: true\n")
    assert doc["job"]["privileged"] is True


def test_gitlab_component_spec_header_is_skipped() -> None:
    text = (
        "spec:\n  inputs:\n    stage: {default: test}\n---\n"
        "scan:\n  stage: $[[ inputs.stage ]]\n  script:\n"
        "    - docker run --privileged alpine:3.20 true\n"
    )
    assert [(f.line, f.rule.id) for f in audit_text(text, ".gitlab-ci.yml")] == [(8, "privileged")]


def test_groovy_strings() -> None:
    source = (
        "def a = $/C:\\x $$HOME $/ /$\n"
        "def b = x / 2 / y\n"
        "def c = /a\\/b'c/\n"
        'def d = "${m.get("}")} \\\nz"\n'
        "def e = '''q\\\\\nr'''\n"
    )
    strings = [(t.text, t.line) for t in tokenize(source) if t.kind == "string"]
    assert strings == [
        ("C:\\x $HOME / ", 1),
        ("a/b'c", 3),
        ('${m.get("}")} \\\nz', 4),
        ("q\\\nr", 6),
    ]


@pytest.mark.parametrize(
    ("text", "name", "line", "reason"),
    [
        ("services: [unclosed\n", "compose.yml", 2, "not valid YAML"),
        ("pipeline {\n  sh 'never closed\n}\n", "Jenkinsfile", 2, "unterminated string"),
        ("pipeline {\n  /* open\n}\n", "Jenkinsfile", 2, "unterminated comment"),
        ("title: notes\n", "notes.yml", 1, "unknown format"),
    ],
)
def test_what_still_cannot_be_read_is_a_finding(
    text: str, name: str, line: int, reason: str
) -> None:
    findings, error = audit_source(text, name)
    assert error is not None and reason in error.reason
    (finding,) = findings
    assert (finding.rule.id, finding.line, finding.severity) == ("unreadable", line, Severity.HIGH)
    assert reason in finding.message
    (lenient,), _ = audit_source(text, name, lenient=True)
    assert lenient.severity is Severity.LOW


def _never_crashes(text: str, name: str, kind: Kind | None = None) -> None:
    findings, error = audit_source(text, name, kind)
    if error is not None:
        assert [f.rule.id for f in findings] == ["unreadable"]
        assert "internal error" not in error.reason, error.reason
        assert "\n" not in error.reason
    for finding in findings:
        assert finding.line >= 1
        assert finding.message and finding.fix


_FUZZ = settings(
    max_examples=int(os.environ.get("DOCKMOAT_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_YAML_BITS = st.sampled_from(
    [
        "services:", "  dind:", "    image: docker:dind", "    privileged: true", "  - ",
        "<<: *a", "&a", "*a", "!reference [.x, script]", "script:", "  - |", "    docker run",
        " --privileged", " -v /var/run/docker.sock:/x", "variables:", "  DOCKER_HOST: ",
        "tcp://d:2375", "'", '"', "{", "}", "[", "]", ":", "---", "jobs:", "on: push",
        "steps:", "  - run: ", "stages: [a]", "job:", "\t", "#", "2024-13-40", "${X:-y}",
        "\\", "?", "|", ">", "-", "%YAML 1.2", "!!binary x", "[1, {a: [}]",
    ]
)  # fmt: skip
_GROOVY_BITS = st.sampled_from(
    [
        "pipeline {", "}", "agent {", "docker {", "image '", "args '", "'", '"', "'''", '"""',
        "${", "$/", "/$", "/", "//", "/*", "*/", "\\", "\n", " ", "sh ", "(", ")", "[", "]",
        "docker.image(", ").inside(", "kubernetes {", "yaml ", "podTemplate(", "--privileged",
        "-v /var/run/docker.sock:/s", "withDockerServer([uri: ", "tcp://h:2375", ":", ",",
        "environment {", "DOCKER_HOST = ", "=", "x", "2",
    ]
)  # fmt: skip


@_FUZZ
@given(st.lists(st.tuples(_YAML_BITS, st.sampled_from(["", " ", "\n", "\n  "])), max_size=40))
def test_fuzz_yaml_readers(parts: list[tuple[str, str]]) -> None:
    text = "".join(a + b for a, b in parts)
    for name, kind in (
        ("docker-compose.yml", Kind.COMPOSE),
        (".gitlab-ci.yml", Kind.GITLAB),
        (".github/workflows/ci.yml", Kind.GITHUB),
        ("any.yml", None),
    ):
        _never_crashes(text, name, kind)


@_FUZZ
@given(st.lists(_GROOVY_BITS, max_size=60))
def test_fuzz_groovy_reader(parts: list[str]) -> None:
    _never_crashes("".join(parts), "Jenkinsfile")


_TOML_BITS = st.sampled_from(
    [
        "[[runners]]", "[runners.docker]", "[runners.kubernetes]", "privileged = true",
        "services_privileged = true", 'volumes = ["/var/run/docker.sock:/s"]', "host = ",
        '"tcp://h:2375"', "[[runners.kubernetes.volumes.host_path]]", 'host_path = "/run"',
        "name = ", "1", "[", "]", "=", '"', "\n", "runners = 3", "docker = 1", "{a = 1}",
        "allowed_privileged_services = []", "cpu_limit = \"\"",
    ]
)  # fmt: skip


@_FUZZ
@given(st.lists(st.tuples(_TOML_BITS, st.sampled_from(["", " ", "\n", "\n  "])), max_size=30))
def test_fuzz_runner_config_reader(parts: list[tuple[str, str]]) -> None:
    text = "".join(a + b for a, b in parts)
    _never_crashes(text, "config.toml")
    _never_crashes(text, "fleet.toml")


_K8S_BITS = st.sampled_from(
    [
        "apiVersion: v1", "kind: Pod", "kind: CronJob", "kind: RunnerDeployment", "spec:",
        "  template:", "    spec:", "  containers:", "  - name: x", "    image: docker:dind",
        "    securityContext: {privileged: true}", "  volumes:", "  - hostPath: {path: /run}",
        "    volumeMounts: [{name: x}]", "hostNetwork: true", "githubConfigUrl: u",
        "containerMode: {type: dind}", "template: {spec: 1}", "ports: [{hostPort: 2375}]",
        "---", ":", "- ", "  ", "[", "{",
    ]
)  # fmt: skip


@_FUZZ
@given(st.lists(st.tuples(_K8S_BITS, st.sampled_from(["", "\n", "\n  "])), max_size=30))
def test_fuzz_kubernetes_reader(parts: list[tuple[str, str]]) -> None:
    text = "".join(a + b for a, b in parts)
    _never_crashes(text, "runner.yaml", Kind.KUBERNETES)
    _never_crashes(text, "values.yaml")


@_FUZZ
@given(st.text(max_size=300))
def test_fuzz_any_text(text: str) -> None:
    for name in ("Jenkinsfile", ".gitlab-ci.yml", "compose.yml", "x.yml", "config.toml"):
        _never_crashes(text, name)


def test_unreadable_pod_yaml_in_a_jenkinsfile() -> None:
    text = (
        "pipeline {\n  agent {\n    kubernetes {\n      yaml '''\nspec: [unclosed\n'''\n"
        "    }\n  }\n  stages { stage('a') { steps { sh 'docker run --privileged x:1' } } }\n}\n"
    )
    findings, error = audit_source(text, "Jenkinsfile")
    assert error is None
    got = [(f.rule.id, f.line, f.severity) for f in findings]
    assert ("unreadable", 4, Severity.HIGH) in got
    assert ("privileged", 9, Severity.HIGH) in got  # the rest of the file is audited
    lenient, _ = audit_source(text, "Jenkinsfile", lenient=True)
    assert ("unreadable", 4, Severity.LOW) in [(f.rule.id, f.line, f.severity) for f in lenient]


def test_gitlab_reference_tags_are_resolved() -> None:
    text = (
        ".tls:\n"
        "  variables:\n"
        "    DOCKER_HOST: tcp://docker:2376\n"
        "    DOCKER_TLS_VERIFY: '1'\n"
        ".setup:\n"
        "  script:\n"
        "    - docker run --privileged alpine:3.20 true\n"
        "build:\n"
        "  variables:\n"
        "    DOCKER_HOST: tcp://docker:2376\n"
        "    DOCKER_TLS_VERIFY: !reference [.tls, variables, DOCKER_TLS_VERIFY]\n"
        "  script:\n"
        "    - !reference [.setup, script]\n"
        "    - echo done\n"
        "loop:\n"
        "  script: !reference [loop, script]\n"
    )
    findings = audit_text(text, ".gitlab-ci.yml")
    # The referenced script is audited where it is written, once; the referenced
    # variables verify TLS, so `build` has no docker-host-no-tls.
    assert [(f.rule.id, f.line) for f in findings] == [("privileged", 7)]
    unresolved = text.replace("!reference [.tls, variables, DOCKER_TLS_VERIFY]", "[x]")
    assert ("docker-host-no-tls", 10) in [
        (f.rule.id, f.line) for f in audit_text(unresolved, ".gitlab-ci.yml")
    ]


@_FUZZ
@given(st.lists(st.tuples(_K8S_BITS, st.sampled_from(["", "\n", "\n  "])), max_size=20))
def test_fuzz_run_context_from_odd_runner_configs(parts: list[tuple[str, str]]) -> None:
    """Learning what a runner grants never stops a run, whatever the file holds."""
    from dockmoat.ci.audit import _learn_context
    from dockmoat.ci.audit.runnerctx import AuditContext

    text = "runnerScaleSetName: x\n" + "".join(a + b for a, b in parts)
    for name in ("values.yaml", "config.toml"):
        _learn_context(AuditContext(), text, name, None)
