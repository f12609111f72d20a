"""Attached and piped-stdin streams through a `tcp://` listener with mutual TLS.

The docker CLI ends a hijacked stream's input with a TLS close_notify (at once for
`docker run` without `-i`, when stdin ends with `-i`) and then reads the output. The
listener's TLS used to shut the connection down on that alert: every attached
`docker run` printed nothing and exited 0. (gateway/tlslisten.py)
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from gwserve import Served

from dockmoat.dind.certs import issue_daemon_certs, new_ca
from harness.clients import client

CLIS = [name for name in ("docker", "docker-20.10") if client(name) is not None]


@pytest.fixture
def tls_listener(serve: Callable[..., Served], tmp_path: Path) -> dict[str, str]:
    certs = issue_daemon_certs(new_ca(), "gw", ["localhost"], ["127.0.0.1"])
    files = {
        "server.pem": certs.server.cert_pem, "server-key.pem": certs.server.key_pem,
        "clients-ca.pem": certs.server_ca_pem, "cert.pem": certs.client.cert_pem,
        "key.pem": certs.client.key_pem, "ca.pem": certs.client_ca_pem,
    }  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    serve(
        "--profile", "permissive", "--listen", f"tcp://127.0.0.1:{port}",
        "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server-key.pem"),
        "--tls-ca", str(tmp_path / "clients-ca.pem"),
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(
        DOCKER_HOST=f"tcp://127.0.0.1:{port}", DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(tmp_path)
    )
    return env


@pytest.mark.parametrize("cli", CLIS)
def test_output_and_piped_stdin_over_a_tls_listener(
    cli: str, tls_listener: dict[str, str], busybox_image: str
) -> None:
    path = client(cli)
    assert path is not None

    def run(*args: str, data: bytes | None = None) -> bytes:
        proc = subprocess.run(
            [path, *args], input=data, capture_output=True, env=tls_listener, timeout=60,
            check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert run("run", "--rm", busybox_image, "echo", "attached") == b"attached\n"
    out = run("run", "--rm", "-i", busybox_image, "sh", "-c", "cat; sleep 0.5; echo after",
              data=b"hello\n" * 1000)  # fmt: skip
    assert out == b"hello\n" * 1000 + b"after\n"
    data = os.urandom(3 << 20)
    out = run("run", "--rm", "-i", busybox_image, "md5sum", data=data)
    assert out.split()[0].decode() == hashlib.md5(data).hexdigest()
