"""Pure parts of the audit: image pins, mounts, docker arguments, the Groovy tokenizer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.ci.audit import Kind, audit_text
from dockmoat.ci.audit.detect import kind_from_name
from dockmoat.ci.audit.dockerargs import parse_run_options, scan_shell_line, split_words
from dockmoat.ci.audit.groovy import structure_problems, tokenize
from dockmoat.ci.audit.images import Role, classify, parse_image, unpinned_reason
from dockmoat.ci.audit.mounts import parse_mount_flag, parse_short, socket_exposure
from dockmoat.errors import ConfigError


@pytest.mark.parametrize(
    "ref",
    ["alpine", "docker:latest", "docker:dind", "docker:dind-rootless", "reg:5000/x/y", "x:stable"],
)
def test_unpinned(ref: str) -> None:
    assert unpinned_reason(ref) is not None


@pytest.mark.parametrize(
    "ref",
    [
        "docker:27.3.1-dind",
        "docker:27-cli",
        "reg:5000/x/y:1.2",
        "alpine@sha256:" + "a" * 64,
        "$CI_REGISTRY_IMAGE:$TAG",
        "${IMAGE}",
    ],
)
def test_pinned_or_templated(ref: str) -> None:
    assert unpinned_reason(ref) is None


def test_registry_port_is_not_a_tag() -> None:
    image = parse_image("registry.local:5000/team/app")
    assert (image.repository, image.tag, image.name) == (
        "registry.local:5000/team/app",
        None,
        "app",
    )


@pytest.mark.parametrize(
    ("image", "command", "role"),
    [
        ("docker:27.3.1-dind", [], Role.DIND),
        ("docker:dind-rootless", [], Role.DIND),
        ("dockmoat-test/dind:latest", ["dockerd"], Role.DIND),
        ("docker:27-cli", ["dockerd", "--tls=false"], Role.DIND),
        (None, ["/usr/local/bin/dockerd"], Role.DIND),
        ("tecnativa/docker-socket-proxy", [], Role.PROXY),
        ("dockmoat/dockmoat:0.1.0", [], Role.GUARD),
        ("dockmoat/dockmoat:0.1.0", ["serve", "--profile", "baseline"], Role.GUARD),
        ("dockmoat/dockmoat:0.1.0", ["sh", "-c", "cat /etc/passwd"], Role.OTHER),
        ("python:3.12", ["dockmoat", "serve"], Role.GUARD),
        ("docker:27-cli", [], Role.OTHER),
    ],
)
def test_classify(image: str | None, command: list[str], role: Role) -> None:
    assert classify(image, command) is role


@pytest.mark.parametrize(
    "spec",
    [
        "/var/run/docker.sock:/var/run/docker.sock",
        "/var/run/docker.sock:/x:ro",
        "/run/docker.sock:/x",
        "/var/run/:/x",
        "/run:/run",
        "/:/host",
        "/var//run/../run/docker.sock:/s",
        "/run/user/1000/docker.sock:/s",
        "/run/containerd/containerd.sock:/c",
        "${DOCKER_SOCK:-/var/run/docker.sock}:/s",
        "/run/dockmoat:/run/dockmoat",
        "/run/dockmoat/control.sock:/c",
        "/run/dockmoat/jobs:/jobs",
    ],
)
def test_socket_exposed(spec: str) -> None:
    assert socket_exposure(parse_short(spec, 1)) is not None


@pytest.mark.parametrize(
    "spec",
    [
        "/run/dockmoat/docker.sock:/var/run/docker.sock",
        "/run/dockmoat/jobs/ci-7.sock:/var/run/docker.sock",
        "docker-sock:/var/run/docker.sock",
        "./workspace:/workspace",
        "/var/lib/docker:/var/lib/docker",
        "/srv/run:/run",
        "/certs",
    ],
)
def test_socket_not_exposed(spec: str) -> None:
    assert socket_exposure(parse_short(spec, 1)) is None


def test_mount_flag() -> None:
    mount = parse_mount_flag("type=bind,src=/var/run/docker.sock,dst=/s,readonly", 3)
    assert (mount.source, mount.target, mount.read_only, mount.line) == (
        "/var/run/docker.sock",
        "/s",
        True,
        3,
    )


def test_run_options() -> None:
    words = split_words(
        "-itd --rm --privileged -v /a:/b --mount type=bind,source=/c,target=/d -e X=1 "
        "--network=host --pid host -m 1g --cpus 2 --pids-limit=10 --health-cmd 'docker info' "
        "--name x docker:27.3.1-dind --tls=false"
    )
    run = parse_run_options(words, 7, expect_image=True)
    assert run.privileged and run.memory and run.cpus and run.pids and run.health
    assert [m.source for m in run.mounts] == ["/a", "/c"]
    assert run.env == {"X": "1"}
    assert (run.network, run.pid, run.image, run.command) == (
        "host",
        "host",
        "docker:27.3.1-dind",
        ["--tls=false"],
    )


def test_shell_line_finds_docker_calls_behind_operators() -> None:
    facts = scan_shell_line(
        "cd x && sudo docker run --privileged alpine:3 true; DOCKER_HOST=tcp://h:2375 docker ps",
        4,
    )
    assert [c.subcommand[0] for c in facts.docker_calls] == ["run", "ps"]
    assert facts.docker_calls[0].run is not None and facts.docker_calls[0].run.privileged
    assert facts.exported == {"DOCKER_HOST": "tcp://h:2375"}


def test_privileged_in_a_word_is_not_a_flag() -> None:
    facts = scan_shell_line("echo docker run --privileged is dangerous", 1)
    assert facts.docker_calls == []


def test_tokenizer_lines_and_strings() -> None:
    tokens = tokenize("a {\n  sh '''\nx\n'''\n  // c 'q\n  b \"s\\\"t\" /* {\n */ }")
    strings = [(t.text, t.line) for t in tokens if t.kind == "string"]
    assert strings == [("\nx\n", 2), ('s"t', 6)]
    assert [t.text for t in tokens if t.kind == "punct"] == ["{", "}"]


def test_tokenizer_rejects_unterminated_string() -> None:
    with pytest.raises(ConfigError, match="unterminated string starting at line 2"):
        tokenize("pipeline {\n sh 'oops\n}")


def test_structure_problems() -> None:
    good = "pipeline { agent any\n stages { stage('a') { steps { sh 'x' } } } }"
    assert structure_problems(good) == []
    assert structure_problems(good[:-1])[0].startswith("unclosed '{'")
    assert "no `pipeline {` block" in structure_problems("node { stage('a') { steps {} } }")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("docker-compose.yml", Kind.COMPOSE),
        ("compose.yaml", Kind.COMPOSE),
        ("ci/x.compose.yml", Kind.COMPOSE),
        (".gitlab-ci.yml", Kind.GITLAB),
        ("ci/build.gitlab-ci.yml", Kind.GITLAB),
        (".github/workflows/ci.yaml", Kind.GITHUB),
        ("Jenkinsfile", Kind.JENKINS),
        ("Jenkinsfile.release", Kind.JENKINS),
        ("ci/deploy.groovy", Kind.JENKINS),
        ("pipeline.yml", None),
    ],
)
def test_kind_from_name(name: str, kind: Kind | None) -> None:
    assert kind_from_name(name) is kind


def test_kind_from_content() -> None:
    workflow = "on: push\njobs:\n  a:\n    runs-on: x\n    container: docker:latest\n"
    assert [f.rule.id for f in audit_text(workflow, "ci.yml")] == ["unpinned-image"]
    gitlab = "build:\n  image: docker:latest\n  script: [echo]\n"
    assert [f.rule.id for f in audit_text(gitlab, "ci.yml")] == ["unpinned-image"]
    compose = "services:\n  a:\n    image: docker:latest\n"
    assert [f.rule.id for f in audit_text(compose, "stack.yml")] == ["unpinned-image"]
    jenkins = "pipeline {\n agent { docker { image 'docker' } }\n}\n"
    assert [f.line for f in audit_text(jenkins, "build")] == [2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1\n", "not valid YAML at line 2"),
        ("just: data\n", "unknown format"),
        ("", "unknown format"),
        ("- a\n- b\n", "unknown format"),
    ],
)
def test_bad_input_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        audit_text(text, "x.yml")


def test_named_kind_with_wrong_shape() -> None:
    with pytest.raises(ConfigError, match="top level is not a mapping"):
        audit_text("- a\n", "docker-compose.yml")


def _audited_or_refused(text: str, names: tuple[str, ...]) -> None:
    """Audited as each file name: findings on real lines, or a ConfigError, nothing else."""
    for name in names:
        try:
            findings = audit_text(text, name)
        except ConfigError:
            continue
        assert all(f.line >= 1 for f in findings)


@given(st.text(max_size=400))
def test_audit_only_ever_raises_config_error(text: str) -> None:
    _audited_or_refused(text, ("docker-compose.yml", "x.yml", "Jenkinsfile", ".gitlab-ci.yml"))


_YAMLISH = st.lists(
    st.sampled_from(
        [
            "services:",
            "  a:",
            "    image: docker:dind",
            "    privileged: true",
            "    volumes:",
            "      - /var/run/docker.sock:/s",
            "    environment:",
            "      - DOCKER_HOST=tcp://a:2375",
            "    depends_on: [a]",
            "jobs:",
            "on: push",
            "  script:",
            "    - docker run --privileged x",
        ]
    ),
    max_size=25,
)


@given(_YAMLISH)
def test_lines_stay_within_the_file(lines: list[str]) -> None:
    text = "\n".join(lines)
    try:
        findings = audit_text(text, "docker-compose.yml")
    except ConfigError:
        return
    assert all(1 <= f.line <= max(len(lines), 1) for f in findings)


@given(st.text(alphabet="{}()[]'\"/*\\\n ab", max_size=200))
def test_tokenizer_is_total(text: str) -> None:
    try:
        tokens = tokenize(text)
    except ConfigError:
        return
    assert all(1 <= t.line <= text.count("\n") + 1 for t in tokens)


_KEYS = st.sampled_from(
    [
        "services", "image", "privileged", "volumes", "environment", "command", "entrypoint",
        "depends_on", "healthcheck", "deploy", "resources", "limits", "network_mode", "pid",
        "condition", "test", "jobs", "on", "container", "env", "options", "steps", "run",
        "script", "variables", "name", "alias", "default", "stages", "source", "target",
        "DOCKER_HOST", "DOCKER_TLS_CERTDIR", "POST", "CONTAINERS", "a", "dind",
    ]
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(
        ["docker:dind", "/var/run/docker.sock:/s", "tcp://dind:2375", "", "--privileged",
         "docker run --privileged x", "host", "service_healthy", "1", "${X:-/run}:/r"]
    ),
)  # fmt: skip
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=5)
    ),
    max_leaves=30,
)


@given(st.dictionaries(_KEYS, _TREES, min_size=1, max_size=5))
def test_any_yaml_shape_is_audited_or_refused_cleanly(tree: dict[str, object]) -> None:
    import json

    text = json.dumps(tree)  # JSON is YAML
    _audited_or_refused(
        text, ("docker-compose.yml", ".gitlab-ci.yml", ".github/workflows/x.yml", "x.yml")
    )


_GROOVY = st.sampled_from(
    ["pipeline", "{", "}", "(", ")", "[", "]", "docker", ".", "image", "inside", "withRun",
     "'docker:dind'", "'--privileged -v /run:/run'", "args", "sh", "script", ":", "+", "=",
     "withDockerContainer", "withDockerServer", "uri", "'tcp://x:2375'", "DOCKER_HOST",
     "\n", "agent", "dockerfile", "credentialsId", "'''\ndocker run --pid host x\n'''"]
)  # fmt: skip


@given(st.lists(_GROOVY, max_size=40))
def test_any_jenkins_token_soup_is_audited_or_refused_cleanly(words: list[str]) -> None:
    text = "pipeline {\n" + " ".join(words)
    try:
        findings = audit_text(text, "Jenkinsfile")
    except ConfigError:
        return
    assert all(1 <= f.line <= text.count("\n") + 1 for f in findings)
