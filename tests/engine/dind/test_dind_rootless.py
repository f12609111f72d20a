"""`dockmoat dind up --rootless` for real: the local rootless DinD image
(`dockmoat-test/dind-rootless:latest`, Debian's rootlesskit, slirp4netns and uidmap;
harness.images), the seed's pipeline in the nested daemon over mutual TLS, and `down`
leaving nothing. The escape attempts are in test_dind_isolation.py."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from dindtest_support import Dind

from dockmoat.dind import naming
from dockmoat.dind.info import DindInfo

APP = """\
FROM dockmoat-test/busybox:latest
RUN echo built-rootless > /built && id -u > /built-as
CMD ["cat", "/built", "/built-as"]
"""


def _up_rootless(dind: Dind, name: str, image: str, busybox: str, *extra: str) -> DindInfo:
    up = dind.cli(
        "dind", "up", name, "--rootless", "--image", image, "--preload", busybox,
        "--no-pool", "--format", "json", *extra, check=False,
    )  # fmt: skip
    assert up.returncode == 0, f"dind up --rootless failed:\n{up.stderr[-4000:]}"
    return DindInfo.from_json(json.loads(up.stdout))


@pytest.mark.slow  # a cold rootless start, a build and a run: ~10-20 s here
def test_rootless_up_runs_the_pipeline_and_down_leaves_nothing(
    dind: Dind,
    dind_name: Callable[[], str],
    rootless_dind_image: str,
    busybox_image: str,
    tmp_path: Path,
) -> None:
    name = dind_name()
    info = _up_rootless(dind, name, rootless_dind_image, busybox_image)

    # The nested daemon says it is rootless, and runs as the image's user on the host engine.
    nested = json.loads(dind.docker(info, "info", "--format", "{{json .}}").stdout)
    assert "name=rootless" in nested["SecurityOptions"], nested["SecurityOptions"]
    assert nested["DockerRootDir"] == "/home/rootless/.local/share/docker"
    details = dind.client.api.inspect_container(info.container_id)
    assert details["Config"]["User"] == "rootless"
    top = dind.client.api.top(info.container_id, ps_args="-o pid,uid,comm")
    uids = {row[top["Titles"].index("UID")] for row in top["Processes"]}
    assert "0" not in uids, top  # nothing in the daemon's container runs as host root
    assert "1000" in uids, top

    # The seed's pipeline in small: build FROM the preloaded base, run the image, tag it.
    context = tmp_path / "app"
    context.mkdir()
    (context / "Dockerfile").write_text(APP)
    dind.docker(info, "build", "-t", "dmtest-rootless-app:1", str(context))
    run = dind.docker(info, "run", "--rm", "dmtest-rootless-app:1")
    assert run.stdout.split() == ["built-rootless", "0"]  # root in the nested container
    dind.docker(info, "tag", "dmtest-rootless-app:1", "registry.example.com/dmtest-rootless:1")
    tags = dind.docker(info, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "registry.example.com/dmtest-rootless:1" in tags

    # Through rootlesskit's port forwarding the same rules hold: without the client
    # certificate the handshake fails, and plain HTTP gets no answer.
    bare = ssl.create_default_context(cafile=str(info.cert_path / "ca.pem"))
    with (
        socket.create_connection(("127.0.0.1", info.port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
        bare.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        tls.recv(100)
    with socket.create_connection(("127.0.0.1", info.port), timeout=5) as plain:
        plain.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"\r\n\r\nOK" not in plain.recv(4096)

    down = dind.cli("dind", "down", name)
    assert "removed container" in down.stdout
    assert dind.instance_resources(info.instance) == {
        "containers": [],
        "networks": [],
        "volumes": [],
    }
    assert not info.cert_path.exists()


def test_rootless_daemon_volume_is_the_rootless_data_root(
    dind: Dind, dind_name: Callable[[], str], rootless_dind_image: str, busybox_image: str
) -> None:
    """The data volume sits at the rootless data root and belongs to the rootless user
    (the image's folder copied into the new volume), so dockerd can write it."""
    name = dind_name()
    info = _up_rootless(dind, name, rootless_dind_image, busybox_image)
    details = dind.client.api.inspect_container(info.container_id)
    mounts = {m["Destination"]: m for m in details["Mounts"]}
    data = mounts["/home/rootless/.local/share/docker"]
    assert data["Name"] == naming.data_volume_name(info.instance)
    owner = dind.client.containers.run(
        busybox_image,
        ["stat", "-c", "%u:%g", "/data"],
        volumes={data["Name"]: {"bind": "/data", "mode": "ro"}},
        remove=True,
        network_mode="none",
    )
    assert owner.decode().strip() == "1000:1000"


@pytest.mark.slow  # a cold rootless start, a build and three runs
def test_rootless_without_privileged_runs_builds_but_no_nested_privileged_container(
    dind: Dind,
    dind_name: Callable[[], str],
    rootless_dind_image: str,
    busybox_image: str,
    tmp_path: Path,
) -> None:
    """`--rootless --no-privileged`: the daemon's container gets CAP_SYS_ADMIN (for the
    setuid newuidmap), seccomp, AppArmor and the /proc masks off and /dev/net/tun, not
    --privileged. Builds and plain containers run; a --privileged one cannot mount its
    sysfs, and the bind-mounted `/` of the daemon's container is as out of reach."""
    name = dind_name()
    info = _up_rootless(dind, name, rootless_dind_image, busybox_image, "--no-privileged")
    host = dind.client.api.inspect_container(info.container_id)["HostConfig"]
    assert host["Privileged"] is False and host["CapAdd"] == ["SYS_ADMIN"]
    assert [d["PathOnHost"] for d in host["Devices"]] == ["/dev/net/tun"]

    context = tmp_path / "app"
    context.mkdir()
    (context / "Dockerfile").write_text(APP)
    dind.docker(info, "build", "-t", "dmtest-rootless-app:1", str(context))
    run = dind.docker(info, "run", "--rm", "dmtest-rootless-app:1")
    assert run.stdout.split() == ["built-rootless", "0"]

    privileged = dind.docker(
        info, "run", "--rm", "--privileged", busybox_image, "true", check=False
    )
    assert privileged.returncode != 0
    assert 'mounting "sysfs"' in privileged.stderr, privileged.stderr

    escape = dind.docker(
        info, "run", "--rm", "-v", "/:/dind", "--cap-add", "ALL", busybox_image, "sh", "-c",
        "cat /proc/self/uid_map; echo x >/dind/usr/local/bin/dmtest-e && echo bin-written;"
        " mknod /tmp/d b 1 3 && echo mknod-made; true",
    )  # fmt: skip
    assert escape.stdout.split()[:6] == ["0", "1000", "1", "1", "100000", "65536"]
    assert "bin-written" not in escape.stdout and "mknod-made" not in escape.stdout
