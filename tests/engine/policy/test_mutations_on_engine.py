"""Mutated dangerous create bodies and odd framings through the gateway: the engine
must never end up with a dangerous container.

Each body carries a label unique to the run; after every request the engine is
inspected for containers with that label, and none may be privileged, bind the
host, add capabilities, share host namespaces or run without a PID limit.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policygw import Gateway

DANGERS: list[tuple[str, object]] = [
    ("Privileged", True),
    ("Binds", ["/:/host"]),
    ("Binds", ["/var/run/docker.sock:/s"]),
    ("CapAdd", ["SYS_ADMIN"]),
    ("PidMode", "host"),
    ("PidsLimit", -1),
    ("SecurityOpt", ["seccomp=unconfined"]),
]
_FOLDS = {"s": "\u017f", "S": "\u017f", "k": "\u212a", "K": "\u212a"}


@st.composite
def spelled(draw: st.DrawFn, name: str) -> str:
    out = []
    for char in name:
        choice = draw(st.integers(0, 3))
        if choice == 1:
            char = char.swapcase()
        elif choice == 2 and char in _FOLDS:
            char = _FOLDS[char]
        elif choice == 3:
            char = f"\\u{ord(char):04x}"
        out.append(char)
    return '"' + "".join(out) + '"'


@st.composite
def body(draw: st.DrawFn, image: str, label: str) -> bytes:
    field, value = draw(st.sampled_from(DANGERS))
    danger = f"{draw(spelled(field))}: {json.dumps(value)}"
    hc = draw(spelled("HostConfig"))
    head = f'"Image": "{image}", "Labels": {{"dmtest": "{label}"}}'
    shape = draw(st.sampled_from(["inner", "top", "merged", "trailing"]))
    if shape == "inner":
        text = f"{{{head}, {hc}: {{{danger}}}}}"
    elif shape == "top":
        text = f"{{{head}, {danger}}}"
    elif shape == "merged":
        text = f'{{{head}, {hc}: {{{danger}}}, "HostConfig": {{"Memory": 67108864}}}}'
    else:
        text = f'{{{head}}} {{"HostConfig": {{{danger}}}}}'
    return text.encode()


def send(sock: str, raw: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(sock)
        s.sendall(raw)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def post(target: str, payload: bytes, chunked: bool = False, te: str = "chunked") -> bytes:
    if chunked:
        framed = f"{len(payload):X}\r\n".encode() + payload + b"\r\n0\r\n\r\n"
        return _head(target, f"Transfer-Encoding: {te}") + framed
    return _head(target, f"Content-Length: {len(payload)}") + payload


def _head(target: str, framing: str) -> bytes:
    lines = [f"POST {target} HTTP/1.1", "Host: x", "Content-Type: application/json", framing]
    return ("\r\n".join([*lines, "Connection: close", "", ""])).encode()


def dangerous(info: dict[str, Any]) -> list[str]:
    host = info["HostConfig"]
    found = []
    if host.get("Privileged"):
        found.append("privileged")
    if host.get("Binds"):
        found.append("binds")
    if host.get("CapAdd"):
        found.append("caps")
    if host.get("PidMode") == "host":
        found.append("pid host")
    if not host.get("PidsLimit") or host["PidsLimit"] <= 0:
        found.append("no pids limit")
    if host.get("SecurityOpt"):
        found.append("security opt")
    return found


@pytest.fixture
def engine_label(
    docker_client: docker.DockerClient, unique_name: Callable[[str], str]
) -> Iterator[str]:
    value = unique_name("mut")
    yield value
    for c in docker_client.containers.list(all=True, filters={"label": f"dmtest={value}"}):
        c.remove(force=True)


def check_engine(docker_client: docker.DockerClient, label: str) -> None:
    for c in docker_client.containers.list(all=True, filters={"label": f"dmtest={label}"}):
        info = docker_client.api.inspect_container(c.id)
        assert dangerous(info) == [], info["HostConfig"]


def test_mutated_bodies_never_make_a_dangerous_container(
    gateway: Gateway, busybox_image: str, docker_client: docker.DockerClient, engine_label: str
) -> None:
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        body(busybox_image, engine_label),
        st.booleans(),
        st.sampled_from(["chunked", "CHUNKED", "Chunked"]),
    )
    def run(raw: bytes, chunked: bool, te: str) -> None:
        send(str(gateway.socket), post("/v1.41/containers/create", raw, chunked, te))
        # The verdict is the engine's state, not the status code.
        check_engine(docker_client, engine_label)

    run()


@pytest.mark.parametrize(
    "target",
    [
        "/v1.41/containers/create",
        "/v1.41./containers/create",
        "/v01.041/containers/create",
        "/containers/create",
        "/v1.41/containers/%63reate",
        "/v1.41/%63ontainers/create",
        "http://docker/v1.41/containers/create",
    ],
)
@pytest.mark.parametrize("framing", ["length", "chunked", "CHUNKED"])
def test_odd_targets_and_framing_never_let_privileged_through(
    gateway: Gateway,
    busybox_image: str,
    docker_client: docker.DockerClient,
    engine_label: str,
    target: str,
    framing: str,
) -> None:
    labels = {"dmtest": engine_label}
    payload = json.dumps(
        {"Image": busybox_image, "Labels": labels, "HostConfig": {"Privileged": True}}
    ).encode()
    reply = send(str(gateway.socket), post(target, payload, framing != "length", framing))
    status = reply.split(b"\r\n", 1)[0]
    assert b" 201 " not in status, reply[:300]
    assert (
        docker_client.containers.list(all=True, filters={"label": f"dmtest={engine_label}"}) == []
    )
