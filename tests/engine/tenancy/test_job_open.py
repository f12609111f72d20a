"""A runner pod opens its own job with its CI job's identity token (the job-open socket).

A real `dockmoat serve` with `--job-open-socket` and an issuer whose key set the test
makes (offline: no CI system runs here); the tokens are signed with those keys as
GitLab signs its ID tokens (ES256, `kid`). The effect is checked on the engine: the
socket handed back is the job's, and one job's socket does not show another's things.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from tenancy_helpers import Serve

ISSUER = "https://gitlab.example.com"
AUD = "dockmoat://test-pool"
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwks() -> str:
    numbers = KEY.public_key().public_numbers()
    x, y = (_b64(n.to_bytes(32, "big")) for n in (numbers.x, numbers.y))
    return json.dumps({"keys": [{"kty": "EC", "kid": "k1", "crv": "P-256", "x": x, "y": y}]})


def token(job_id: str, *, exp: float | None = None, key: Any = KEY, aud: str = AUD) -> str:
    header = {"alg": "ES256", "typ": "JWT", "kid": "k1"}
    now = time.time()
    claims = {"iss": ISSUER, "aud": aud, "iat": now - 5, "exp": exp or now + 600,
              "job_id": job_id, "project_path": "group/app"}  # fmt: skip
    signed = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    r, s = decode_dss_signature(key.sign(signed.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signed}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


def open_call(path: Path, bearer: str | None) -> tuple[int, dict[str, Any]]:
    connection = _Unix(path)
    try:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer is not None else {}
        connection.request("POST", "/jobs", headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture
def served(tmp_path: Path, docker_host: str) -> Iterator[tuple[Serve, Path]]:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(_jwks())
    open_socket = tmp_path / "open" / "open.sock"
    server = Serve(root=tmp_path, upstream=docker_host, extra=(
        "--job-open-socket", str(open_socket), "--job-identity", f"{ISSUER}={jwks}",
        "--job-identity-audience", AUD,
    ))  # fmt: skip
    server.start()
    yield server, open_socket
    listed = server.job("ls", "--format", "json", check=False)
    if listed.returncode == 0:
        for job in json.loads(listed.stdout):
            server.job("close", job["job"], check=False)
    server.stop()


def test_a_token_opens_its_own_job_and_only_that(
    served: tuple[Serve, Path], busybox_image: str, docker_client: docker.DockerClient
) -> None:
    server, open_socket = served
    assert open_socket.stat().st_mode & 0o777 == 0o666
    status, answer = open_call(open_socket, token("4242"))
    assert status == 201, answer
    assert answer["job"] == "gl-4242"
    job_socket = Path(answer["socket"])
    assert job_socket.parent == open_socket.parent and job_socket.name != "gl-4242.sock"
    assert answer["docker_host"] == f"unix://{job_socket}"
    # The same job again (the pod's retry, another step): the same socket.
    assert open_call(open_socket, token("4242")) == (200, answer)
    status, other = open_call(open_socket, token("4243"))
    assert status == 201 and other["socket"] != answer["socket"]

    mine = docker.DockerClient(base_url=answer["docker_host"])
    theirs = docker.DockerClient(base_url=other["docker_host"])
    try:
        mine.containers.create(busybox_image, ["true"], name="web")
        # On the engine: the container is job gl-4242's.
        assert docker_client.containers.get("gl-4242--web").labels["dockmoat.tenant"] == "gl-4242"
        assert [c.name for c in mine.containers.list(all=True)] == ["web"]
        assert theirs.containers.list(all=True) == []
        with pytest.raises(docker.errors.NotFound):
            theirs.containers.get("web")
    finally:
        mine.close()
        theirs.close()
    listed = {job["job"]: job for job in json.loads(server.job("ls", "--format", "json").stdout)}
    assert {"gl-4242", "gl-4243"} <= set(listed)
    # A closed job stays closed: its still valid token opens nothing again.
    server.job("close", "gl-4243")
    status, answer = open_call(open_socket, token("4243"))
    assert status == 403 and "was closed" in answer["message"], answer


def test_tokens_that_prove_nothing_open_nothing(served: tuple[Serve, Path]) -> None:
    server, open_socket = served
    refused = {
        "no token": (None, 401),
        "another key": (token("7", key=OTHER), 401),
        "another audience": (token("7", aud="dockmoat://elsewhere"), 401),
        "expired": (token("7", exp=time.time() - 3600), 403),
        "garbage": ("a.b.c", 401),
    }
    for what, (bearer, expected) in refused.items():
        status, answer = open_call(open_socket, bearer)
        assert status == expected, (what, answer)
        assert answer["message"].startswith("dockmoat: job-open: "), (what, answer)
    server.job("open", "gl-8")  # opened by the node's administrator, not by a token
    status, answer = open_call(open_socket, token("8"))
    assert status == 409, answer
    jobs = [job["job"] for job in json.loads(server.job("ls", "--format", "json").stdout)]
    assert jobs == ["gl-8"]  # nothing opened by the refused calls
