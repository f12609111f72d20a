"""The gateway routes odd request forms exactly as the live dockerd does.

Each target is sent to the raw socket and through the gateway (permissive, so
the daemon decides); the answers must match, and where a request has an effect
the audit's classification must name what the daemon executed.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound
from gwserve import Served, raw_get

from harness.endpoint import Endpoint


@pytest.fixture(scope="module")
def raw(engine_endpoint: Endpoint, docker_host: str) -> Path:
    """The engine's own socket (the host's, or a nested engine's in the matrix run)."""
    path = engine_endpoint.unix_path
    assert path is not None, f"these tests talk to a unix socket, not {docker_host}"
    return Path(path)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def send(sock: Path, method: str, target: str) -> int:
    req = f"{method} {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n"
    if method in ("POST", "PUT"):
        req += "Content-Length: 0\r\n"
    return status_of(raw_get(sock, (req + "\r\n").encode("latin-1")))


@pytest.fixture
def gateway(permissive: Served) -> Served:
    return permissive


@pytest.mark.parametrize(
    "target",
    [
        "/v1.41/containers/json",
        "/v1.41./containers/json",
        "/v01.041/containers/json",
        "/v1.0041/containers/json",
        "/v/containers/json",
        "/V1.41/containers/json",
        "//containers/json",
        "/./containers/json",
        "/containers/../containers/json",
        "/v1.41//containers/json",
        "/%63ontainers/json",
        "/v1.41%2Fcontainers/json",
        "http://docker/v1.41/containers/json",
        "/containers/json?all=1;x=2",
        "/containers/json?all=%zz",
        "/containers/json/",
        "/_ping",
        "/_ping/",
        "/v1.41/_ping",
        "/nothing/here",
        "/v1.41/nothing",
    ],
)
def test_get_forms_answer_alike(gateway: Served, raw: Path, target: str) -> None:
    answer = send(raw, "GET", target)
    via = send(gateway.socket, "GET", target)
    if via in (400, 403) and answer != via:
        # The gateway may refuse more than dockerd (never less): only where dockerd
        # itself refuses or runs nothing.
        assert answer >= 300, (target, answer, via)
    else:
        assert via == answer, (target, answer, via)


@pytest.mark.parametrize(
    ("template", "executes"),
    [
        ("/v1.41/containers/{name}", True),
        ("/v1.41./containers/{name}", True),
        ("/v01.041/containers/{name}", True),
        ("/containers/%s", True),  # percent-encoded name
        ("//containers/{name}", False),
        ("/v1.41/./containers/{name}", False),
        ("/x/../containers/{name}", False),
        ("http://docker/containers/{name}", True),
    ],
)
def test_delete_forms_classified_as_executed(
    gateway: Served,
    docker_client: docker.DockerClient,
    busybox_image: str,
    unique_name: Callable[[str], str],
    template: str,
    executes: bool,
) -> None:
    name = unique_name("route")
    container = docker_client.containers.create(busybox_image, "true", name=name)
    try:
        if "%s" in template:
            target = template % "".join(f"%{b:02x}" for b in name.encode())
        else:
            target = template.format(name=name)
        status = send(gateway.socket, "DELETE", target)
        try:
            docker_client.containers.get(container.id)
            exists = True
        except NotFound:
            exists = False
        assert exists is not executes, (target, status)
        entries = gateway.audit_where(method="DELETE", path=target)
        assert entries, target
        assert (entries[-1]["route"] == "containers.delete") is executes, entries[-1]
    finally:
        with contextlib.suppress(NotFound):
            container.remove(force=True)


def test_image_name_with_slashes_and_encoding(
    gateway: Served, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    encoded = busybox_image.replace("/", "%2F")
    for target in (f"/images/{busybox_image}/json", f"/images/{encoded}/json"):
        reply = raw_get(gateway.socket, f"GET {target} HTTP/1.0\r\n\r\n".encode())
        assert status_of(reply) == 200
        body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        assert busybox_image in body["RepoTags"]
    deadline = time.monotonic() + 5
    while len(gateway.audit_where(route="images.inspect")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
