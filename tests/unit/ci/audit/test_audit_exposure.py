"""Pure parts added for exposures and precision: endpoints, ports, chmod, variables, roles."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.ci.audit import audit_text
from dockmoat.ci.audit.dockerargs import scan_shell_line
from dockmoat.ci.audit.exposure import command_hits, published_port_hit, setting_hit
from dockmoat.ci.audit.images import Role, classify, resolve, unpinned_reason


@pytest.mark.parametrize(
    ("name", "value", "found"),
    [
        ("DOZZLE_REMOTE_HOST", "tcp://10.0.0.4:2375", True),
        ("PORTAINER_ENDPOINT", "tcp://h:2375", True),  # 2375 is Docker's, whatever the name
        ("DOCKER_URL", "tcp://h", True),  # a Docker variable without a port
        ("DOCKER_URL", "http://h:4243", True),
        ("DOCKER_URL", "tcp://h:2376", False),  # the TLS port
        ("REDIS_URL", "tcp://cache:6379", False),
        ("LOG_SINK", "tcp://logs:5000", False),
        ("DOCKER_CONFIG", "/root/.docker", False),
    ],
)
def test_setting_hit(name: str, value: str, found: bool) -> None:
    assert (setting_hit(name, value, 3, "svc", tls=False) is not None) is found
    assert setting_hit(name, value, 3, "svc", tls=True) is None


@pytest.mark.parametrize(
    ("spec", "severity"),
    [
        ("2375:2375", "high"),
        ("0.0.0.0:2375:2375/tcp", "high"),
        ("2375", "high"),
        ("12375:2375", "high"),
        ("2370-2380:2370-2380", "high"),
        ("127.0.0.1:2375:2375", "medium"),
        ("[::1]:2375:2375", "medium"),
        ("2376:2376", "medium"),
        ("2375:8080", None),
        ("8080:80", None),
        ("abc", None),
    ],
)
def test_published_port(spec: str, severity: str | None) -> None:
    hit = published_port_hit(spec, 1, "svc")
    got = (hit.severity or hit.rule.severity).value if hit else None
    assert got == severity


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("chmod 666 /var/run/docker.sock", "socket-world-writable"),
        ("sudo chmod 0777 /run/docker.sock", "socket-world-writable"),
        ("chmod o+w /var/run/docker.sock", "socket-world-writable"),
        ("chmod -R a+rw /var/run/docker.sock", "socket-world-writable"),
        ("chmod 660 /var/run/docker.sock", None),
        ("chmod g+rw /var/run/docker.sock", None),
        ("chmod 666 /tmp/file", None),
        ("buildkitd --addr tcp://0.0.0.0:1234", "buildkit-plain-tcp"),
        ("buildkitd --addr=tcp://0.0.0.0:1234 --tlscert c --tlskey k", None),
        ("buildkitd --addr unix:///run/buildkit/buildkitd.sock", None),
        ("socat TCP-LISTEN:2375,fork UNIX-CONNECT:/var/run/docker.sock", "docker-api-plain-tcp"),
        ("socat TCP-LISTEN:8080,fork TCP:web:80", None),
        ("traefik --providers.docker.endpoint=tcp://d:2375", "docker-api-plain-tcp"),
        ("traefik --providers.docker.endpoint tcp://d:2375", "docker-api-plain-tcp"),
        (
            "traefik --providers.docker.endpoint=tcp://d:2375 --providers.docker.tls.ca=/c",
            None,
        ),
        ("portainer -H tcp://host:2375", "docker-api-plain-tcp"),
        ("docker -H tcp://host:2375 ps", None),  # docker-host-no-tls says it
        ("dockerd -H tcp://0.0.0.0:2375", None),  # dind-tls-disabled says it
    ],
)
def test_command_hits(line: str, rule: str | None) -> None:
    facts = scan_shell_line(line, 1)
    hits = [h for words in facts.commands for h in command_hits(words, 1, "x", tls=False)]
    assert [h.rule.id for h in hits] == ([rule] if rule else [])


def test_shell_c_scripts_are_scanned() -> None:
    facts = scan_shell_line("sh -c 'docker build -t app . && chmod 666 /var/run/docker.sock'", 1)
    assert facts.built == ["app"]
    assert ["chmod", "666", "/var/run/docker.sock"] in facts.commands


@pytest.mark.parametrize(
    ("reference", "variables", "resolved"),
    [
        ("docker:${V:-27.3.1}-dind", {}, "docker:27.3.1-dind"),
        ("docker:${V:-27.3.1}-dind", {"V": "dind"}, "docker:dind-dind"),
        ("docker:${V}-dind", {"V": "26.1.4"}, "docker:26.1.4-dind"),
        ("docker:$V", {"V": "$W", "W": "27"}, "docker:27"),
        ("docker:${V}", {}, None),
        ("$CI_REGISTRY_IMAGE:$CI_COMMIT_SHA", {}, None),
        ("${{ matrix.image }}", {}, None),
        ("docker:${V-}", {}, "docker:"),
    ],
)
def test_resolve(reference: str, variables: dict[str, str], resolved: str | None) -> None:
    assert resolve(reference, variables) == resolved


def test_unpinned_after_resolving() -> None:
    assert unpinned_reason("docker:${DOCKER_VERSION:-27.3.1}-dind") is None
    reason = unpinned_reason("docker:${TAG:-dind}")
    assert reason is not None and "(= 'docker:dind')" in reason


@given(st.text(max_size=60), st.dictionaries(st.text(max_size=5), st.text(max_size=8)))
def test_resolve_never_raises(reference: str, variables: dict[str, str]) -> None:
    out = resolve(reference, variables)
    assert out is None or isinstance(out, str)


@pytest.mark.parametrize(
    ("image", "command", "env", "job", "role"),
    [
        ("docker:27.3.1-dind", ["docker", "info"], [], False, Role.OTHER),
        ("docker:27.3.1-dind", ["sh", "-c", "sleep 1"], [], False, Role.OTHER),
        ("docker:27.3.1-dind", ["--mtu=1400"], [], False, Role.DIND),
        ("docker:27.3.1-dind", [], [], True, Role.OTHER),  # a job image runs the script
        ("docker:27.3.1-cli", ["dockerd-entrypoint.sh"], [], False, Role.DIND),
        ("lscr.io/linuxserver/socket-proxy:1.26.2", [], [], False, Role.PROXY),
        ("wollomatic/socket-proxy:1.5.0", [], [], False, Role.PROXY),
        ("haproxy:2.9.7", [], ["CONTAINERS", "POST"], False, Role.PROXY),
        ("ghcr.io/acme/socket-proxy-socat:1", [], [], False, Role.OTHER),  # a name is no proof
        ("golang:1.23", ["-allowGET=/v1\\..*/containers"], [], False, Role.PROXY),
        ("alpine:3.20", [], ["CONTAINERS"], False, Role.OTHER),
    ],
)
def test_classify_by_what_it_is(
    image: str, command: list[str], env: list[str], job: bool, role: Role
) -> None:
    assert classify(image, command, frozenset(env), job=job) is role


def test_unpinned_skipped_for_built_and_local_images() -> None:
    compose = (
        "services:\n"
        "  app:\n    build: .\n    image: acme/app\n"
        "  worker:\n    image: acme/app\n"
        "  tool:\n    image: alpine\n    command: sh -c 'docker build -t helper . && true'\n"
        "  helper:\n    image: helper\n"
    )
    findings = audit_text(compose, "compose.yml")
    assert [(f.rule.id, f.line) for f in findings] == [("unpinned-image", 8)]
    gitlab = (
        "variables:\n  DOCKER_VERSION: '27.3.1'\n"
        "job:\n  image: docker:${DOCKER_VERSION}-cli\n  script:\n"
        "    - docker build -t ci-tools .\n    - docker run --rm ci-tools lint\n"
        "other:\n  image: ci-tools\n  script: [make]\n"
    )
    assert audit_text(gitlab, ".gitlab-ci.yml") == []


def test_jenkins_with_server_without_credentials() -> None:
    text = (
        "node {\n"
        "  docker.withServer('tcp://swarm.example.com:2376', 'swarm-certs') { sh 'docker ps' }\n"
        "  docker.withServer('tcp://' + 'builder:2375') { sh 'docker ps' }\n"
        "}\n"
    )
    assert [(f.rule.id, f.line) for f in audit_text(text, "Jenkinsfile")] == [
        ("docker-host-no-tls", 3)
    ]


def test_gitlab_extends_brings_the_template_variables() -> None:
    text = (
        ".tls:\n  variables:\n    DOCKER_TLS_VERIFY: '1'\n    DOCKER_CERT_PATH: /certs/client\n"
        ".docker:\n  extends: .tls\n"
        "build:\n  extends: [.docker]\n  variables:\n    DOCKER_HOST: tcp://docker:2376\n"
        "  script: [docker info]\n"
        "plain:\n  variables:\n    DOCKER_HOST: tcp://docker:2376\n  script: [docker info]\n"
    )
    findings = audit_text(text, ".gitlab-ci.yml")
    assert [(f.rule.id, f.line) for f in findings] == [("docker-host-no-tls", 14)]


def test_workflow_env_endpoints_are_judged_once() -> None:
    text = (
        "on: push\nenv:\n  PORTAINER_DOCKER_URL: tcp://deploy:2375\n"
        "jobs:\n  a:\n    runs-on: x\n    steps: [{run: 'true'}]\n"
        "  b:\n    runs-on: x\n    steps: [{run: 'true'}]\n"
    )
    assert [(f.rule.id, f.line) for f in audit_text(text, ".github/workflows/x.yml")] == [
        ("docker-api-plain-tcp", 3)
    ]


_GITLAB_DOCUMENTED = """\
default:
  image: {image}
  services:
    - docker:27.3.1-dind
variables:
  DOCKER_HOST: tcp://docker:2376
  DOCKER_TLS_CERTDIR: "/certs"
build:
  script: [docker build .]
"""


@pytest.mark.parametrize(
    ("image", "flagged"),
    [("docker:27.3.1", False), ("registry.example.com/mirror/docker:27.3.1-cli", False),
     ("python:3.12.7", True)],
)  # fmt: skip
def test_certdir_turns_verification_on_where_the_docker_entrypoint_runs(
    image: str, flagged: bool
) -> None:
    findings = audit_text(_GITLAB_DOCUMENTED.format(image=image), ".gitlab-ci.yml")
    assert ("docker-host-no-tls" in {f.rule.id for f in findings}) is flagged
    # GitHub replaces a job container's entrypoint: the same variables verify nothing.
    workflow = (
        "on: push\njobs:\n  b:\n    runs-on: x\n    container:\n      image: docker:27.3.1\n"
        "      env:\n        DOCKER_HOST: tcp://dind:2376\n        DOCKER_TLS_CERTDIR: /certs\n"
        "    steps: [{run: docker info}]\n"
    )
    github = audit_text(workflow, ".github/workflows/b.yml")
    assert [f.rule.id for f in github] == ["docker-host-no-tls"]


def test_plain_tcp_to_a_socket_proxy_of_the_file_is_medium() -> None:
    text = (
        "services:\n"
        "  dockerproxy:\n    image: wollomatic/socket-proxy:1.5.2\n"
        "    command: ['-allowfrom=traefik', '-allowGET=/v1\\\\..{1,2}/containers/.*']\n"
        "    volumes: ['/var/run/docker.sock:/var/run/docker.sock:ro']\n"
        "  traefik:\n    image: traefik:v3.1.4\n"
        "    command: ['--providers.docker.endpoint=tcp://dockerproxy:2375']\n"
        "  other:\n    image: traefik:v3.1.4\n"
        "    command: ['--providers.docker.endpoint=tcp://10.0.0.9:2375']\n"
    )
    got = [(f.rule.id, f.line, f.severity.value) for f in audit_text(text, "compose.yml")]
    assert got == [
        ("docker-api-plain-tcp", 8, "medium"),
        ("docker-api-plain-tcp", 11, "high"),
    ]


@pytest.mark.parametrize(
    ("reference", "unpinned"),
    [
        ("$CI_REGISTRY_IMAGE/builder:latest", True),
        ("${REGISTRY}/mirror/docker:dind", True),
        ("$CI_REGISTRY_IMAGE/builder:1.4", False),
        ("$CI_REGISTRY_IMAGE/builder", False),  # no tag written: cannot tell
        ("$CI_REGISTRY_IMAGE:$CI_COMMIT_SHA", False),
        ("$CI_REGISTRY_IMAGE/builder:$TAG", False),
    ],
)
def test_literal_tag_behind_a_variable_registry(reference: str, unpinned: bool) -> None:
    assert (unpinned_reason(reference) is not None) is unpinned


def test_other_dind_images_start_their_daemon_whatever_the_command() -> None:
    assert classify("cruizba/ubuntu-dind:noble-27.3.1", ["sleep", "infinity"]) is Role.DIND
    assert classify("docker:27.3.1-dind", ["sleep", "infinity"]) is Role.OTHER
