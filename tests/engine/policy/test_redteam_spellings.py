"""Red team regressions: raw-API spellings the guard already refused (2026-11-27 review).

Each body is one a hand-written client could send and dockerd 20.10 would apply;
the CLI never produces these forms, so the CLI-driven tests do not cover them.
After the refusal, the engine must hold no container with the test's label.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
from policygw import Gateway
from rawdocker import call

pytestmark = pytest.mark.engine

WS = "{ws}"  # replaced by the gateway's allowed workspace

CREATE_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("containers.confinement", {"HostConfig": {"SecurityOpt": ["seccomp:unconfined"]}}),
    ("containers.confinement", {"HostConfig": {"SecurityOpt": ["label:disable"]}}),
    ("containers.confinement", {"HostConfig": {"MaskedPaths": []}}),
    ("containers.capabilities", {"CapAdd": ["SYS_ADMIN"]}),
    ("containers.capabilities", {"HostConfig": {"CapAdd": "SYS_ADMIN"}}),  # Go StrSlice
    ("containers.capabilities", {"HostConfig": {"Capabilities": ["CAP_SYS_ADMIN"]}}),
    ("containers.devices", {"DeviceCgroupRules": ["a *:* rwm"]}),
    ("containers.host-namespaces", {"PidMode": "host"}),
    ("containers.host-namespaces", {"HostConfig": {"CgroupnsMode": "host"}}),
    ("containers.bind-mounts", {"HostConfig": {"Binds": ["/etc:/x:rw,z"]}}),
    ("containers.bind-mounts", {"HostConfig": {"Binds": ["//etc:/x"]}}),
    ("containers.bind-mounts", {"HostConfig": {"Binds": ["/./etc:/x"]}}),
    ("containers.bind-mounts", {"HostConfig": {"Binds": ["/run:/x"]}}),
    ("containers.bind-mounts", {"HostConfig": {"Binds": [WS + "/../../../../../../etc:/x"]}}),
    (
        "containers.bind-mounts",
        {"HostConfig": {"Mounts": [{"type": "bind", "source": "/etc", "target": "/x"}]}},
    ),
    (
        "volumes.host-path",
        {
            "HostConfig": {
                "Mounts": [
                    {
                        "Type": "volume",
                        "Target": "/x",
                        "VolumeOptions": {
                            "DriverConfig": {
                                "Options": {"type": "none", "o": "bind", "device": "/etc"}
                            }
                        },
                    }
                ]
            }
        },
    ),
]

QUERY_REFUSALS = [
    ("images.registry-address", "/v1.41/images/create?fromImage=LOCALHOST:5000/x&tag=1"),
    ("images.registry-address", "/v1.41/images/create?fromImage=127.1:5000/x&tag=1"),
    ("images.registry-address", "/v1.41/images/create?fromImage=2130706433:5000/x&tag=1"),
    ("images.remote-fetch", "/v1.41/images/create?fromSrc=127.0.0.1:1/x"),
    ("build.remote-context", "/v1.41/build?remote=git@127.0.0.1:x.git"),
    ("build.remote-context", "/v1.41/build?remote=127.0.0.1:1/x.tar"),
]


@pytest.fixture
def label(unique_name: Callable[[str], str], docker_client: docker.DockerClient) -> Iterator[str]:
    name = unique_name("rt")
    yield name
    for container in docker_client.containers.list(all=True, filters={"label": f"dmtest={name}"}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@pytest.mark.parametrize(
    ("rule", "body"), CREATE_BODIES, ids=[json.dumps(b) for _, b in CREATE_BODIES]
)
def test_raw_create_spelling_is_refused_and_nothing_exists(
    rule: str,
    body: dict[str, Any],
    gateway: Gateway,
    busybox_image: str,
    label: str,
    docker_client: docker.DockerClient,
) -> None:
    text = json.dumps({"Image": busybox_image, "Labels": {"dmtest": label}, **body})
    text = text.replace(WS, str(gateway.workspace))
    status, answer = call(str(gateway.socket), "POST", "/v1.41/containers/create", text.encode())
    assert status == 403, answer
    assert f"dockmoat: {rule}:" in answer["message"]
    assert docker_client.containers.list(all=True, filters={"label": f"dmtest={label}"}) == []


def test_one_string_cap_add_is_read_as_dockerd_reads_it(
    gateway: Gateway, busybox_image: str, label: str, docker_client: docker.DockerClient
) -> None:
    """HostConfig.CapAdd/CapDrop are Go StrSlices: one string is a list of one."""
    body = {"Image": busybox_image, "Labels": {"dmtest": label},
            "HostConfig": {"CapAdd": "NET_RAW", "CapDrop": "ALL"}}  # fmt: skip
    status, answer = call(
        str(gateway.socket), "POST", "/v1.41/containers/create", json.dumps(body).encode()
    )
    assert status == 201, answer
    host = docker_client.api.inspect_container(answer["Id"])["HostConfig"]
    assert (host["CapAdd"], host["CapDrop"]) == (["NET_RAW"], ["ALL"])


@pytest.mark.parametrize(("rule", "target"), QUERY_REFUSALS)
def test_daemon_side_fetch_spelling_is_refused(rule: str, target: str, gateway: Gateway) -> None:
    status, answer = call(str(gateway.socket), "POST", target)
    assert status == 403, answer
    assert f"dockmoat: {rule}:" in answer["message"]
