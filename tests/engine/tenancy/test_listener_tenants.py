"""Listeners are tenants: the default listener, `--tenant NAME`, mutual TLS `--tenant-from-cn`.

Everything is checked on the engine itself (names, labels) through the raw socket.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from tenancy_helpers import DOCKER_NEW, Serve

from dockmoat.gateway.config import default_tenant, parse_listen
from support.pki import Issued, make_ca, make_leaf

pytestmark = pytest.mark.engine

IMAGE = "dockmoat-test/busybox:latest"
LABEL = "dockmoat.tenant"


def _tenant_of(url: str) -> str:
    return default_tenant(parse_listen(url, tls_cert=None, tls_key=None, tls_ca=None).endpoint)


def _docker(
    host: str, *args: str, tls: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    return subprocess.run(
        [DOCKER_NEW, "-H", host, *(tls or []), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _remove_labelled(client: docker.DockerClient, tenant: str) -> None:
    for found in client.api.containers(all=True, filters={"label": f"{LABEL}={tenant}"}):
        client.api.remove_container(found["Id"], force=True)


@pytest.fixture
def server(tmp_path: Path, docker_host: str) -> Iterator[Serve]:
    """A serve whose listeners name no tenant: main.sock and second.sock."""
    started = Serve(
        root=tmp_path, upstream=docker_host, extra=("--listen", f"unix://{tmp_path}/second.sock")
    )
    started.start()
    yield started
    started.stop()


def test_the_default_listener_is_a_tenant(
    server: Serve, docker_client: docker.DockerClient
) -> None:
    main = f"unix://{server.root}/main.sock"
    tenant = _tenant_of(main)
    name = f"dmtest-lt-{secrets.token_hex(4)}"
    host_made = docker_client.api.create_container(IMAGE, "true", name=f"{name}-host")["Id"]
    try:
        # The host's own container does not exist for the listener's clients.
        for ref in (f"{name}-host", host_made, host_made[:12]):
            refused = _docker(main, "container", "inspect", ref)
            assert refused.returncode != 0
            assert f"No such container: {ref}" in refused.stderr
        assert host_made not in _ok(_docker(main, "ps", "-aq", "--no-trunc"))
        removed = _docker(main, "rm", "-f", host_made)
        assert "No such container" in removed.stderr
        assert docker_client.api.inspect_container(host_made)["Id"] == host_made

        # What the client makes is its own: prefixed and labelled on the engine,
        # read back under the name it chose.
        made = _ok(_docker(main, "create", "--pull", "never", "--name", name, IMAGE, "true"))
        engine = docker_client.api.inspect_container(made)
        assert engine["Name"] == f"/{tenant}--{name}"
        assert engine["Config"]["Labels"][LABEL] == tenant
        assert _ok(_docker(main, "inspect", "-f", "{{.Name}}", name)) == f"/{name}"
        assert _ok(_docker(main, "ps", "-a", "--format", "{{.Names}}")).split() == [name]
    finally:
        docker_client.api.remove_container(host_made, force=True)
        _remove_labelled(docker_client, tenant)


def test_two_default_listeners_are_isolated(
    server: Serve, docker_client: docker.DockerClient
) -> None:
    main, second = f"unix://{server.root}/main.sock", f"unix://{server.root}/second.sock"
    tenants = _tenant_of(main), _tenant_of(second)
    assert tenants[0] != tenants[1]
    try:
        one = _ok(_docker(main, "create", "--pull", "never", "--name", "db", IMAGE, "true"))
        # The same name on the other listener does not collide: another name space.
        two = _ok(_docker(second, "create", "--pull", "never", "--name", "db", IMAGE, "true"))
        assert one != two
        assert docker_client.api.inspect_container(one)["Name"] == f"/{tenants[0]}--db"
        assert docker_client.api.inspect_container(two)["Name"] == f"/{tenants[1]}--db"
        assert _ok(_docker(main, "inspect", "-f", "{{.Id}}", "db")) == one
        assert _ok(_docker(second, "inspect", "-f", "{{.Id}}", "db")) == two
        refused = _docker(second, "rm", "-f", one)
        assert "No such container" in refused.stderr
        assert _ok(_docker(second, "ps", "-aq", "--no-trunc")).split() == [two]
        docker_client.api.inspect_container(one)  # still there
    finally:
        for tenant in tenants:
            _remove_labelled(docker_client, tenant)


def test_tenant_shared_makes_two_listeners_one_tenant(
    tmp_path: Path, docker_host: str, docker_client: docker.DockerClient
) -> None:
    tenant = f"dmtest-shared-{secrets.token_hex(4)}"
    shared = Serve(
        root=tmp_path,
        upstream=docker_host,
        extra=("--listen", f"unix://{tmp_path}/second.sock", "--tenant", tenant),
    )
    shared.start()
    main, second = f"unix://{tmp_path}/main.sock", f"unix://{tmp_path}/second.sock"
    try:
        made = _ok(_docker(main, "create", "--pull", "never", "--name", "db", IMAGE, "true"))
        assert docker_client.api.inspect_container(made)["Name"] == f"/{tenant}--db"
        assert _ok(_docker(second, "inspect", "-f", "{{.Id}}", "db")) == made
        _ok(_docker(second, "rm", "db"))
        with pytest.raises(docker.errors.NotFound):
            docker_client.api.inspect_container(made)
        # A job may not take the listener tenant's name (it would share its things).
        refused = shared.job("open", tenant, check=False)
        assert refused.returncode != 0 and "tenant of a listener" in refused.stderr
    finally:
        shared.stop()
        _remove_labelled(docker_client, tenant)


# --- mutual TLS: the tenant is the client certificate's CN ---------------------


@dataclass
class Pki:
    root: Path
    ca: Issued

    def issue(self, stem: str, subject: str | x509.Name, *, server: bool = False) -> None:
        names = {"dns": ("localhost",), "ips": ("127.0.0.1",)} if server else {}
        leaf = make_leaf(self.ca, subject, server=server, **names)
        (self.root / f"{stem}.pem").write_bytes(leaf.cert_pem)
        (self.root / f"{stem}-key.pem").write_bytes(leaf.key_pem)

    def client_flags(self, stem: str) -> list[str]:
        return [
            "--tlsverify",
            "--tlscacert", str(self.root / "ca.pem"),
            "--tlscert", str(self.root / f"{stem}.pem"),
            "--tlskey", str(self.root / f"{stem}-key.pem"),
        ]  # fmt: skip


def _new_pki(root: Path) -> Pki:
    pki = Pki(root, make_ca("dmtest tenancy CA"))
    (root / "ca.pem").write_bytes(pki.ca.cert_pem)
    return pki


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_tenant_from_cn_isolates_two_certificates(
    tmp_path: Path, docker_host: str, docker_client: docker.DockerClient
) -> None:
    pki = _new_pki(tmp_path)
    pki.issue("server", "dockmoat gateway", server=True)
    alice, bob = (f"dmtest-{who}-{secrets.token_hex(4)}" for who in ("alice", "bob"))
    pki.issue("alice", alice)
    pki.issue("bob", bob)
    pki.issue("badcn", "Not A Tenant!")
    pki.issue("nocn", x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nobody")]))
    port = _free_port()
    served = Serve(
        root=tmp_path,
        upstream=docker_host,
        extra=(
            "--listen", f"tcp://127.0.0.1:{port}", "--tenant-from-cn",
            "--tls-cert", str(tmp_path / "server.pem"),
            "--tls-key", str(tmp_path / "server-key.pem"),
            "--tls-ca", str(tmp_path / "ca.pem"),
        ),
    )  # fmt: skip
    served.start()
    host = f"tcp://127.0.0.1:{port}"
    try:
        made = _ok(
            _docker(host, "create", "--pull", "never", "--name", "db", IMAGE, "true",
                    tls=pki.client_flags("alice"))
        )  # fmt: skip
        engine = docker_client.api.inspect_container(made)
        assert engine["Name"] == f"/{alice}--db"
        assert engine["Config"]["Labels"][LABEL] == alice
        assert _ok(_docker(host, "inspect", "-f", "{{.Id}}", "db", tls=pki.client_flags("alice")))
        # Bob does not see it, cannot remove it, and his `db` is another container.
        for ref in ("db", made, made[:12]):
            refused = _docker(host, "rm", "-f", ref, tls=pki.client_flags("bob"))
            assert "No such container" in refused.stderr  # (rm -f exits 0 on "no such")
        assert _ok(_docker(host, "ps", "-aq", tls=pki.client_flags("bob"))) == ""
        his = _ok(
            _docker(host, "create", "--pull", "never", "--name", "db", IMAGE, "true",
                    tls=pki.client_flags("bob"))
        )  # fmt: skip
        assert docker_client.api.inspect_container(his)["Name"] == f"/{bob}--db"
        assert docker_client.api.inspect_container(made)["Id"] == made
        # Certificates without a usable CN are refused with a message saying so.
        for stem, why in (
            ("badcn", "'Not A Tenant!', not a tenant name"),
            ("nocn", "no single CN"),
        ):
            refused = _docker(host, "ps", tls=pki.client_flags(stem))
            assert refused.returncode != 0
            assert "tenancy.client-cn" in refused.stderr and why in refused.stderr
        # The unix listener of the same server is a tenant of its own.
        main = f"unix://{tmp_path}/main.sock"
        assert _ok(_docker(main, "ps", "-aq")) == ""
    finally:
        served.stop()
        for tenant in (alice, bob):
            _remove_labelled(docker_client, tenant)


def test_the_listener_tenant_survives_a_restart(
    server: Serve, docker_client: docker.DockerClient
) -> None:
    main = f"unix://{server.root}/main.sock"
    tenant = _tenant_of(main)
    try:
        made = _ok(_docker(main, "create", "--pull", "never", "--name", "keep", IMAGE, "true"))
        server.stop()
        server.start()
        # Same address, same tenant: what it made is still its own, under the same name.
        assert _ok(_docker(main, "inspect", "-f", "{{.Id}}", "keep")) == made
        assert _ok(_docker(main, "ps", "-aq", "--no-trunc")).split() == [made]
        _ok(_docker(main, "rm", "keep"))
        with pytest.raises(docker.errors.NotFound):
            docker_client.api.inspect_container(made)
    finally:
        _remove_labelled(docker_client, tenant)
