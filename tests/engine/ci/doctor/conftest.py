"""A real nested daemon with TLS on a loopback port and a unix socket owned by group 4242."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from doctor_engine_support import (
    LABEL,
    NESTED_MTU,
    SOCKET_GID,
    DoctorRun,
    TlsDaemon,
    clean_env,
    dockmoat_cli,
)

from support.pki import make_ca, make_leaf


@pytest.fixture
def doctor(shared_dir: Path) -> Callable[..., DoctorRun]:
    """Run the real `dockmoat doctor --format json` in a subprocess, optionally as another user."""
    empty = shared_dir / "empty-docker-config"
    empty.mkdir(exist_ok=True)
    empty_config = str(empty)

    def run(
        *args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
    ) -> DoctorRun:
        proc = dockmoat_cli(
            "doctor",
            "--format",
            "json",
            *args,
            # An empty docker config: a `docker context use` elsewhere must not steer doctor.
            env={**clean_env(), "DOCKER_CONFIG": empty_config, **(env or {})},
            prefix=prefix,
            runtime=shared_dir,
        )
        try:
            findings = json.loads(proc.stdout)
        except json.JSONDecodeError:
            pytest.fail(
                f"doctor printed no JSON (exit {proc.returncode}): {proc.stdout!r} {proc.stderr!r}"
            )
        return DoctorRun(proc.returncode, findings, proc.stderr)

    return run


@pytest.fixture(scope="module")
def shared_dir() -> Iterator[Path]:
    """A folder other users may traverse (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="dmtest-doctor-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _wait_for_socket(
    path: Path, container: docker.models.containers.Container, seconds: float
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            with socket.socket(socket.AF_UNIX) as sock:
                try:
                    sock.connect(str(path))
                    sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                    if b"OK" in sock.recv(4096):
                        return
                except OSError:
                    pass
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.2)
    logs = container.logs(tail=30).decode(errors="replace")
    pytest.fail(f"the nested daemon did not come up: {logs}")


@pytest.fixture(scope="module")
def tls_daemon(
    docker_client: docker.DockerClient, dind_image: str, shared_dir: Path
) -> Iterator[TlsDaemon]:
    ca = make_ca("doctor-test-ca")
    # The server is named localhost only: dialing 127.0.0.1 is the wrong-SAN case.
    server = make_leaf(ca, "dind", server=True, dns=("localhost",))
    certs = shared_dir / "server"
    certs.mkdir()
    (certs / "ca.pem").write_bytes(ca.cert_pem)
    (certs / "cert.pem").write_bytes(server.cert_pem)
    (certs / "key.pem").write_bytes(server.key_pem)
    run_dir = shared_dir / "run"
    run_dir.mkdir(mode=0o755)
    run_dir.chmod(0o755)
    name = f"dmtest-doctor-{os.urandom(4).hex()}"
    container = docker_client.containers.run(
        dind_image,
        name=name,
        detach=True,
        privileged=True,
        labels=LABEL,
        ports={"2376/tcp": ("127.0.0.1", None)},
        volumes={
            str(certs): {"bind": "/certs", "mode": "ro"},
            str(run_dir): {"bind": "/run/moat", "mode": "rw"},
        },
        command=[
            "dockerd",
            "-H",
            "unix:///var/run/docker.sock",
            "-H",
            "unix:///run/moat/docker.sock",
            "-H",
            "tcp://0.0.0.0:2376",
            "--tlsverify",
            "--tlscacert",
            "/certs/ca.pem",
            "--tlscert",
            "/certs/cert.pem",
            "--tlskey",
            "/certs/key.pem",
            "--group",
            str(SOCKET_GID),
            f"--mtu={NESTED_MTU}",
        ],
    )
    try:
        _wait_for_socket(run_dir / "docker.sock", container, 60)
        container.reload()
        port = int(container.ports["2376/tcp"][0]["HostPort"])
        yield TlsDaemon(name=name, port=port, ca=ca, socket_path=run_dir / "docker.sock")
    finally:
        container.remove(force=True, v=True)
