"""Jenkinsfiles: docker agents, docker.image(...).inside/withRun, sh steps, environment."""

from __future__ import annotations

import re
from collections.abc import Iterator

from dockmoat.ci.audit import rules
from dockmoat.ci.audit.checks import check_containers, tcp_host
from dockmoat.ci.audit.dockerargs import parse_run_options, split_words
from dockmoat.ci.audit.findings import Hit
from dockmoat.ci.audit.groovy import Token, tokenize
from dockmoat.ci.audit.jenkins_pods import container_template, host_path_volume, pod_yaml_hits
from dockmoat.ci.audit.model import Container, Located
from dockmoat.ci.audit.scripts import check_script

_PIPELINE = re.compile(r"^\s*(pipeline|node)\s*[({]", re.MULTILINE)
_DOCKER_VAR = re.compile(r"^(DOCKER_[A-Z_]+)=(.*)$", re.DOTALL)
_METHODS_WITH_ARGS = frozenset({"inside", "withRun", "run"})


def looks_like(text: str) -> bool:
    return _PIPELINE.search(text) is not None


def analyse(text: str) -> Iterator[Hit]:
    tokens = tokenize(text)
    env = _environment(tokens)
    # The environment itself, whatever agent reads it (`agent any` has no container).
    containers: list[Container] = [
        Container(label="environment", line=1, env=env, job=True, image_entrypoint=False)
    ]
    templates: list[Container] = []
    scripts: list[tuple[list[tuple[int, str]], str]] = []
    for i, token in enumerate(tokens):
        if token.kind != "ident":
            continue
        if token.text in ("docker", "dockerfile") and _is(tokens, i + 1, "{"):
            containers.append(_agent_block(tokens, i, env))
        elif (
            token.text == "docker" and _is(tokens, i + 1, ".") and _is(tokens, i + 2, "withServer")
        ):
            yield from _with_server(tokens, i)
        elif token.text == "docker" and _is(tokens, i + 1, ".") and _is(tokens, i + 2, "image"):
            site = _image_call(tokens, i, env)
            if site is not None:
                containers.append(site)
        elif token.text == "withDockerContainer":
            containers.append(_with_docker_container(tokens, i, env))
        elif token.text == "sh":
            script = _script_arg(tokens, i)
            if script is not None:
                scripts.append((_lines(script), f"sh step (line {script.line})"))
        elif token.text == "withDockerServer":
            yield from _docker_server(tokens, i)
        elif token.text == "yaml":
            pod = _string_at(tokens, i + 2 if _is(tokens, i + 1, ":") else i + 1)
            if pod is None and _is(tokens, i + 1, "("):
                pod = _string_at(tokens, i + 2)
            if pod is not None:
                yield from pod_yaml_hits(pod)
        elif token.text == "containerTemplate" and _is(tokens, i + 1, "("):
            templates.append(container_template(tokens, i))
        elif token.text == "hostPathVolume" and _is(tokens, i + 1, "("):
            yield from host_path_volume(tokens, i)
    yield from check_containers(containers)
    yield from check_containers(templates)
    for lines, label in scripts:
        yield from check_script(lines, label, [env])


def _is(tokens: list[Token], i: int, text: str) -> bool:
    return i < len(tokens) and tokens[i].text == text and tokens[i].kind != "string"


def _string_at(tokens: list[Token], i: int) -> Token | None:
    """The string literal at i, with any `'a' + "b"` concatenation that follows joined in."""
    if i >= len(tokens) or tokens[i].kind != "string":
        return None
    first = tokens[i]
    parts = [first.text]
    while _is(tokens, i + 1, "+") and i + 2 < len(tokens) and tokens[i + 2].kind == "string":
        parts.append(tokens[i + 2].text)
        i += 2
    if len(parts) == 1:
        return first
    return Token("string", "".join(parts), first.line)


def _lines(token: Token) -> list[tuple[int, str]]:
    return [(token.line + k, part) for k, part in enumerate(token.text.split("\n"))]


def _environment(tokens: list[Token]) -> dict[str, Located]:
    """DOCKER_* variables set anywhere: `environment { X = '...' }`, `env.X = ...`, withEnv."""
    env: dict[str, Located] = {}
    for i, token in enumerate(tokens):
        if token.kind == "ident" and token.text.startswith("DOCKER_") and _is(tokens, i + 1, "="):
            value = _string_at(tokens, i + 2)
            if value is not None:
                env[token.text] = Located(value.text, value.line)
        elif token.kind == "string":
            match = _DOCKER_VAR.match(token.text)
            if match:
                env[match.group(1)] = Located(match.group(2), token.line)
    return env


def _container(
    label: str,
    line: int,
    image: Token | None,
    args: Token | None,
    env: dict[str, Located],
    *,
    job: bool,
) -> Container:
    run = parse_run_options(
        split_words(args.text) if args else [], args.line if args else line, expect_image=False
    )
    args_line = args.line if args else line
    own = {k: Located(v, args_line) for k, v in run.env.items() if v is not None}
    return Container(
        label=label,
        line=line,
        image=Located(image.text, image.line) if image else None,
        privileged_line=args_line if run.privileged else None,
        runtime=run.runtime,
        env=own,
        inherited_env=env,
        mounts=run.mounts,
        network=Located(run.network, args_line) if run.network else None,
        pid=Located(run.pid, args_line) if run.pid else None,
        ipc=Located(run.ipc, args_line) if run.ipc else None,
        ports=[Located(p, args_line) for p in run.ports],
        job=job,
        image_entrypoint=not job,
        limits={
            n for n, ok in (("memory", run.memory), ("cpus", run.cpus), ("pids", run.pids)) if ok
        },
        health=run.health,
    )


def _agent_block(tokens: list[Token], start: int, env: dict[str, Located]) -> Container:
    """`agent { docker { image '...' args '...' } }` (or `dockerfile { args '...' }`)."""
    depth, i = 0, start + 1
    image = args = None
    while i < len(tokens):
        token = tokens[i]
        if _is(tokens, i, "{"):
            depth += 1
        elif _is(tokens, i, "}"):
            depth -= 1
            if depth == 0:
                break
        elif depth == 1 and token.kind == "ident" and token.text in ("image", "args"):
            value = _string_at(tokens, i + 1)
            if value is not None and token.text == "image":
                image = value
            elif value is not None:
                args = value
        i += 1
    label = f"{tokens[start].text} agent"
    return _container(label, tokens[start].line, image, args, env, job=True)


def _image_call(tokens: list[Token], start: int, env: dict[str, Located]) -> Container | None:
    """`docker.image('X')` optionally followed by `.inside('ARGS')`/`.withRun(...)`/`.run(...)`."""
    if not _is(tokens, start + 3, "("):
        return None
    image = _string_at(tokens, start + 4)
    if image is None:
        return None
    args = None
    inside = False
    i = start + 5
    if _is(tokens, i, ")") and _is(tokens, i + 1, ".") and i + 2 < len(tokens):
        method = tokens[i + 2]
        inside = method.text == "inside"
        if method.text in _METHODS_WITH_ARGS and _is(tokens, i + 3, "("):
            args = _string_at(tokens, i + 4)
    # `.inside` runs the pipeline's steps in the container (its command is `cat`);
    # `.run`/`.withRun` run the image's own command, a daemon for a DinD image.
    label = f"docker.image({image.text!r})"
    return _container(label, image.line, image, args, env, job=inside)


def _with_docker_container(tokens: list[Token], start: int, env: dict[str, Located]) -> Container:
    image = args = None
    if _is(tokens, start + 1, "("):
        image = _string_at(tokens, start + 2)
        i = start + 2
        while i < len(tokens) and not _is(tokens, i, ")"):
            if tokens[i].kind == "ident" and _is(tokens, i + 1, ":"):
                value = _string_at(tokens, i + 2)
                if tokens[i].text == "image":
                    image = value
                elif tokens[i].text == "args":
                    args = value
            i += 1
    return _container("withDockerContainer", tokens[start].line, image, args, env, job=True)


def _script_arg(tokens: list[Token], start: int) -> Token | None:
    """The script of `sh '...'`, `sh("...")` or `sh(script: '...', ...)`."""
    direct = _string_at(tokens, start + 1)
    if direct is not None:
        return direct
    if not _is(tokens, start + 1, "("):
        return None
    first = _string_at(tokens, start + 2)
    if first is not None:
        return first
    i = start + 2
    while i < len(tokens) and not _is(tokens, i, ")"):
        if tokens[i].text == "script" and _is(tokens, i + 1, ":"):
            return _string_at(tokens, i + 2)
        i += 1
    return None


def _docker_server(tokens: list[Token], start: int) -> Iterator[Hit]:
    """`withDockerServer([uri: 'tcp://...'])` without `credentialsId` has no TLS."""
    uri = None
    has_credentials = False
    i = start + 1
    depth = 0
    while i < len(tokens):
        if _is(tokens, i, "("):
            depth += 1
        elif _is(tokens, i, ")"):
            depth -= 1
            if depth <= 0:
                break
        elif tokens[i].text == "uri" and _is(tokens, i + 1, ":"):
            uri = _string_at(tokens, i + 2)
        elif tokens[i].text == "credentialsId":
            has_credentials = True
        i += 1
    if uri is not None and tcp_host(uri.text) and not has_credentials:
        yield Hit(
            rules.DOCKER_HOST_NO_TLS,
            uri.line,
            f"withDockerServer uri {uri.text} without credentialsId (no TLS client certificate)",
        )


def _with_server(tokens: list[Token], start: int) -> Iterator[Hit]:
    """`docker.withServer('tcp://...'[, 'credentialsId'])`: no credentials, no TLS."""
    if not _is(tokens, start + 3, "("):
        return
    uri = _string_at(tokens, start + 4)
    if uri is None or not tcp_host(uri.text):
        return
    i = start + 5
    while _is(tokens, i, "+") and i + 1 < len(tokens) and tokens[i + 1].kind == "string":
        i += 2
    if not _is(tokens, i, ","):
        yield Hit(
            rules.DOCKER_HOST_NO_TLS,
            uri.line,
            f"docker.withServer {uri.text} without a credentials id (no TLS client certificate)",
        )
