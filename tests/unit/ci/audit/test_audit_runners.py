"""Runner configs judged alone and with the CI files that run on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockmoat.ci.audit import Kind, Severity, audit_paths, audit_text
from dockmoat.ci.audit.detect import kind_from_name
from dockmoat.errors import ConfigError

CI = """\
build:
  image: docker:27.3.1-cli
  services:
    - name: docker:27.3.1-dind
      alias: docker
  script:
    - docker build .
"""

RUNNER = """\
[[runners]]
  name = "fleet"
  executor = "docker"
  [runners.docker]
{docker}
"""


def _dind_severity(tmp_path: Path, docker: str | None) -> tuple[Severity, str, int]:
    ci = tmp_path / ".gitlab-ci.yml"
    ci.write_text(CI)
    paths = [str(ci)]
    if docker is not None:
        config = tmp_path / "config.toml"
        config.write_text(RUNNER.format(docker=docker))
        paths.append(str(config))
    result = audit_paths(paths)
    (finding,) = [f for f in result.findings if f.rule.id == "gitlab-dind-service"]
    assert finding.file == str(ci) and finding.line == 4
    return finding.severity, finding.message, result.exit_code


@pytest.mark.parametrize(
    ("docker", "severity", "exit_code", "says"),
    [
        (None, Severity.MEDIUM, 0, "needs a runner that runs it privileged"),
        ("    privileged = true", Severity.HIGH, 1, "makes every job container privileged"),
        (
            '    services_privileged = true\n    allowed_privileged_services = ["docker:*-dind"]',
            Severity.MEDIUM,
            0,
            "grants privileged mode to services only",
        ),
        ("    privileged = false", Severity.LOW, 0, "cannot start there"),
        (
            "    services_privileged = true\n"
            '    allowed_privileged_services = ["docker.io/library/docker:*-dind-rootless"]',
            Severity.LOW,
            0,
            "runs this image privileged",
        ),
        (
            "    privileged = true\n    services_privileged = false",
            Severity.LOW,
            1,
            "cannot start there",
        ),
    ],
)
def test_dind_service_is_judged_by_the_runner_given_with_it(
    tmp_path: Path, docker: str | None, severity: Severity, exit_code: int, says: str
) -> None:
    got, message, code = _dind_severity(tmp_path, docker)
    assert got is severity
    assert says in message
    # A privileged runner config is itself high, whatever CI file runs on it.
    assert code == exit_code


def test_dind_service_mapping_form_and_fix() -> None:
    text = (
        "services:\n"
        "  - name: registry.example.com/docker:27.3.1-dind\n"
        "    alias: dockerd\n"
        '    command: ["--registry-mirror", "https://mirror.example.com"]\n'
        "job:\n  script: [docker info]\n"
    )
    (finding,) = audit_text(text, ".gitlab-ci.yml")
    assert (finding.rule.id, finding.line) == ("gitlab-dind-service", 2)
    assert "dockmoat generate gitlab --mode guarded" in finding.fix
    assert "allowed_privileged_services" in finding.fix
    assert "rootless" in finding.fix


def test_a_dind_image_running_a_client_is_no_dind_service() -> None:
    text = (
        "services:\n"
        "  - name: docker:27.3.1-dind\n"
        '    entrypoint: ["docker", "version"]\n'
        "job:\n  script: [docker info]\n"
    )
    assert audit_text(text, ".gitlab-ci.yml") == []


def test_broken_runner_config_is_unreadable_and_does_not_stop_the_ci_file(tmp_path: Path) -> None:
    ci = tmp_path / ".gitlab-ci.yml"
    ci.write_text(CI)
    config = tmp_path / "config.toml"
    config.write_text("[[runners]]\n  name = \n")
    result = audit_paths([str(ci), str(config)])
    rules = [(f.file, f.rule.id) for f in result.findings]
    assert (str(ci), "gitlab-dind-service") in rules
    assert (str(config), "unreadable") in rules
    assert "not valid TOML" in result.errors[0].reason


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("config.toml", Kind.GITLAB_RUNNER),
        ("/etc/gitlab-runner/config.toml", Kind.GITLAB_RUNNER),
        ("values.yaml", None),
        ("pyproject.toml", None),
    ],
)
def test_kind_from_name(name: str, kind: Kind | None) -> None:
    assert kind_from_name(name) is kind


def test_runner_config_is_found_by_content_and_other_toml_is_unknown() -> None:
    text = '[[runners]]\n  name = "r"\n  [runners.docker]\n    privileged = true\n'
    assert [f.rule.id for f in audit_text(text, "fleet.toml")] == ["runner-privileged"]
    findings = audit_text(text, "x", Kind.GITLAB_RUNNER)
    assert [f.line for f in findings] == [4]
    with pytest.raises(ConfigError, match="unknown format"):
        audit_text("[tool.ruff]\nline-length = 100\n", "pyproject.toml")


def test_kubernetes_manifests_of_every_workload_kind() -> None:
    pod = (
        "      containers:\n"
        "        - name: dind\n"
        "          image: docker:27.3.1-dind\n"
        "          securityContext: {privileged: true}\n"
        "          resources: {limits: {memory: 2Gi, cpu: '2'}}\n"
        "          readinessProbe: {exec: {command: [docker, info]}}\n"
    )
    deployment = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n" + pod
    cronjob = (
        "apiVersion: batch/v1\nkind: CronJob\nspec:\n  jobTemplate:\n    spec:\n"
        "      template:\n        spec:\n" + "\n".join("    " + line for line in pod.splitlines())
    )
    for text in (deployment, cronjob):
        findings = audit_text(text, "runner.yaml")
        assert [(f.rule.id, f.severity) for f in findings] == [
            ("dind-privileged", Severity.MEDIUM)
        ], text


_WORKFLOW = """\
on: push
jobs:
  build:
    runs-on: {runs_on}
    services:
      dind:
        image: docker:27.3.1-dind
        options: >-
          --privileged --memory 4g --cpus 2 --pids-limit 4096
          --health-cmd "docker info"
    steps:
      - run: |
          docker run --rm --privileged -d --memory 1g --cpus 1 --pids-limit 100 \\
            --health-cmd "docker info" docker:27.3.1-dind
"""

_ARC = """\
githubConfigUrl: https://github.com/acme
runnerScaleSetName: {name}
containerMode:
  type: {mode}
template:
  spec:
    containers:
      - name: runner
        image: ghcr.io/actions/actions-runner:2.320.0
        command: ["/home/runner/run.sh"]
        resources: {{limits: {{memory: 4Gi, cpu: "2"}}}}
"""


@pytest.mark.parametrize(
    ("runs_on", "name", "mode", "severity"),
    [
        ("arc-dind", "arc-dind", "dind", "high"),
        ("[self-hosted, arc-dind]", "arc-dind", "dind", "high"),
        ("arc-dind", "arc-dind", "kubernetes", "medium"),
        ("ubuntu-24.04", "arc-dind", "dind", "medium"),
    ],
)
def test_dind_on_an_arc_scale_set_in_dind_mode_is_root_on_the_node(
    tmp_path: Path, runs_on: str, name: str, mode: str, severity: str
) -> None:
    workflow = tmp_path / ".github" / "workflows" / "build.yml"
    workflow.parent.mkdir(parents=True)
    workflow.write_text(_WORKFLOW.format(runs_on=runs_on))
    values = tmp_path / "values.yaml"
    values.write_text(_ARC.format(name=name, mode=mode))
    result = audit_paths([str(workflow), str(values)])
    assert result.errors == []
    dind = [f for f in result.findings if f.rule.id == "dind-privileged"]
    assert [(f.line, f.severity.value) for f in dind] == [(8, severity), (13, severity)]
    if severity == "high":
        assert "root on the node" in dind[0].message
