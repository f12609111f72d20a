"""`dockmoat doctor` against failures made on purpose, on the real engine."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import docker
import pytest
from doctor_engine_support import SOCKET_GID, DoctorRun, TlsDaemon, clean_env, dockmoat_cli

from support.pki import make_ca, make_leaf, write_client_dir

Doctor = Callable[..., DoctorRun]
NOBODY = ("setpriv", "--reuid=65534", "--regid=65534")


# --- a stopped daemon -------------------------------------------------------------------


def test_no_socket_file(doctor: Doctor, tmp_path: Path) -> None:
    run = doctor("--host", f"unix://{tmp_path}/docker.sock")
    assert run.code == 1
    (reach,) = run.by_check("daemon.reachable")
    assert reach["status"] == "fail"
    assert "no socket" in (reach["detail"] or "")
    assert "start the daemon" in (reach["fix"] or "")


def test_stale_socket_nobody_listens_on(doctor: Doctor, tmp_path: Path) -> None:
    # What a crashed daemon leaves behind: the socket file, no listener.
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    run = doctor("--host", f"unix://{path}")
    assert run.code == 1
    (reach,) = run.by_check("daemon.reachable")
    assert "connection refused" in (reach["detail"] or "")
    assert run.status("socket.permissions") == "ok"


def test_closed_loopback_port(doctor: Doctor) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = doctor("--host", f"tcp://127.0.0.1:{port}")
    assert run.code == 1
    assert run.status("daemon.reachable") == "fail"
    assert "connection refused" in (run.by_check("daemon.reachable")[0]["detail"] or "")
    # Plain TCP is called out even on loopback.
    assert run.status("daemon.transport") == "warn"


# --- TLS against a real nested daemon ---------------------------------------------------


def _tls_env(folder: Path) -> dict[str, str]:
    return {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(folder)}


def test_good_certificates_pass(doctor: Doctor, tls_daemon: TlsDaemon, tmp_path: Path) -> None:
    folder = write_client_dir(
        tmp_path / "c", tls_daemon.ca, make_leaf(tls_daemon.ca, "ci", server=False)
    )
    run = doctor("--host", f"tcp://localhost:{tls_daemon.port}", env=_tls_env(folder))
    statuses = {f["check"]: f["status"] for f in run.findings}
    assert run.code == 0, run.findings
    for check in (
        "tls.files",
        "tls.key-match",
        "tls.client-chain",
        "tls.expiry",
        "daemon.reachable",
        "daemon.transport",
        "tls.server-chain",
        "tls.server-san",
        "tls.server-expiry",
        "daemon.storage-driver",
    ):
        assert statuses[check] == "ok", (check, run.findings)
    assert "mutual TLS, verified" in (run.by_check("daemon.reachable")[0]["detail"] or "")


def test_docker_context_made_by_the_docker_cli(
    doctor: Doctor, tls_daemon: TlsDaemon, tmp_path: Path
) -> None:
    folder = write_client_dir(
        tmp_path / "c", tls_daemon.ca, make_leaf(tls_daemon.ca, "ci", server=False)
    )
    config = tmp_path / "docker-config"
    endpoint = (
        f"host=tcp://localhost:{tls_daemon.port},ca={folder}/ca.pem,"
        f"cert={folder}/cert.pem,key={folder}/key.pem"
    )
    for argv in (
        ["context", "create", "dmtest-ctx", "--docker", endpoint],
        ["context", "use", "dmtest-ctx"],
    ):
        made = subprocess.run(
            ["docker", "--config", str(config), *argv], capture_output=True, text=True, check=False
        )
        assert made.returncode == 0, made.stderr
    run = doctor(env={"DOCKER_CONFIG": str(config)})
    assert run.code == 0, run.findings
    (reach,) = run.by_check("daemon.reachable")
    assert "from context dmtest-ctx" in (reach["detail"] or "")
    assert "mutual TLS, verified" in (reach["detail"] or "")
    assert run.status("tls.server-san") == "ok"
    # DOCKER_HOST beats the current context, as with the docker CLI ...
    plain = doctor(
        env={"DOCKER_CONFIG": str(config), "DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    )
    assert plain.status("daemon.reachable") == "fail"
    # ... and --context beats DOCKER_HOST.
    chosen = doctor(
        "--context", "dmtest-ctx", env={"DOCKER_CONFIG": str(config), "DOCKER_HOST": "unix:///x"}
    )
    assert chosen.status("daemon.reachable") == "ok"


def test_wrong_san(doctor: Doctor, tls_daemon: TlsDaemon, tmp_path: Path) -> None:
    folder = write_client_dir(
        tmp_path / "c", tls_daemon.ca, make_leaf(tls_daemon.ca, "ci", server=False)
    )
    run = doctor("--host", f"tcp://127.0.0.1:{tls_daemon.port}", env=_tls_env(folder))
    assert run.code == 1
    (san,) = run.by_check("tls.server-san")
    assert san["status"] == "fail"
    assert "does not name 127.0.0.1 (SANs: localhost)" in (san["detail"] or "")
    assert run.status("tls.server-chain") == "ok"
    assert run.status("daemon.reachable") == "fail"
    assert "mismatch" in (run.by_check("daemon.reachable")[0]["detail"] or "")


def test_expired_client_certificate(doctor: Doctor, tls_daemon: TlsDaemon, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    expired = make_leaf(
        tls_daemon.ca,
        "ci",
        server=False,
        start=now - timedelta(days=30),
        end=now - timedelta(days=1),
    )
    folder = write_client_dir(tmp_path / "c", tls_daemon.ca, expired)
    run = doctor("--host", f"tcp://localhost:{tls_daemon.port}", env=_tls_env(folder))
    assert run.code == 1
    (expiry,) = run.by_check("tls.expiry")
    assert expiry["status"] == "fail"
    assert "cert.pem expired" in (expiry["detail"] or "")
    # The daemon itself refuses the handshake.
    (reach,) = run.by_check("daemon.reachable")
    assert reach["status"] == "fail"
    assert "rejected this client's certificate" in (reach["detail"] or "")


def test_certificate_expiring_soon_warns(
    doctor: Doctor, tls_daemon: TlsDaemon, tmp_path: Path
) -> None:
    soon = make_leaf(tls_daemon.ca, "ci", server=False, end=datetime.now(UTC) + timedelta(days=5))
    folder = write_client_dir(tmp_path / "c", tls_daemon.ca, soon)
    run = doctor("--host", f"tcp://localhost:{tls_daemon.port}", env=_tls_env(folder))
    assert run.code == 0
    assert run.status("tls.expiry") == "warn"
    assert run.status("daemon.reachable") == "ok"


def test_key_of_another_certificate(doctor: Doctor, tls_daemon: TlsDaemon, tmp_path: Path) -> None:
    client = make_leaf(tls_daemon.ca, "ci", server=False)
    other = make_leaf(tls_daemon.ca, "other", server=False)
    folder = write_client_dir(tmp_path / "c", tls_daemon.ca, client, key=other.key)
    run = doctor("--host", f"tcp://localhost:{tls_daemon.port}", env=_tls_env(folder))
    assert run.code == 1
    assert run.status("tls.key-match") == "fail"
    assert run.status("daemon.reachable") == "fail"


def test_client_certificate_of_another_ca(
    doctor: Doctor, tls_daemon: TlsDaemon, tmp_path: Path
) -> None:
    stranger = make_ca("some-other-ca")
    folder = write_client_dir(
        tmp_path / "c", tls_daemon.ca, make_leaf(stranger, "ci", server=False)
    )
    run = doctor("--host", f"tcp://localhost:{tls_daemon.port}", env=_tls_env(folder))
    assert run.code == 1
    assert run.status("tls.client-chain") == "fail"
    assert "rejected this client's certificate" in (
        run.by_check("daemon.reachable")[0]["detail"] or ""
    )


def test_plain_http_to_the_tls_port(doctor: Doctor, tls_daemon: TlsDaemon) -> None:
    run = doctor("--host", f"tcp://127.0.0.1:{tls_daemon.port}")
    assert run.code == 1
    (reach,) = run.by_check("daemon.reachable")
    assert "expects TLS" in (reach["detail"] or "")
    assert "DOCKER_TLS_VERIFY=1" in (reach["fix"] or "")


def test_missing_certificate_folder(doctor: Doctor, tls_daemon: TlsDaemon, tmp_path: Path) -> None:
    run = doctor("--host", f"tcp://localhost:{tls_daemon.port}", env=_tls_env(tmp_path / "none"))
    assert run.code == 1
    (files,) = run.by_check("tls.files")
    assert files["status"] == "fail"
    assert "ca.pem: missing" in (files["detail"] or "")
    # The certificate the daemon shows is still judged.
    assert run.status("tls.server-san") == "ok"


# --- socket permissions -----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to act as another user")
def test_socket_of_another_group(doctor: Doctor, tls_daemon: TlsDaemon) -> None:
    path = tls_daemon.socket_path
    assert path.stat().st_gid == SOCKET_GID
    run = doctor("--host", f"unix://{path}", prefix=(*NOBODY, "--clear-groups"))
    assert run.code == 1
    (reach,) = run.by_check("daemon.reachable")
    assert "permission denied" in (reach["detail"] or "")
    (perm,) = run.by_check("socket.permissions")
    assert perm["status"] == "fail"
    assert f"root:{SOCKET_GID}" in (perm["detail"] or "")
    # Group 4242 has no name on this host: chgrp on the host or --group-add in a container.
    fix = perm["fix"] or ""
    assert f"--group-add {SOCKET_GID}" in fix
    assert f"--group-add $(stat -c %g {path})" in fix
    if not Path("/.dockerenv").exists():
        assert f"sudo chgrp docker {path}" in fix

    # The same user with that group may use the daemon.
    member = doctor("--host", f"unix://{path}", prefix=(*NOBODY, f"--groups={SOCKET_GID}"))
    assert member.status("daemon.reachable") == "ok", member.findings
    assert member.status("socket.permissions") == "ok"
    assert member.code == 0


def test_socket_without_group_write(doctor: Doctor, shared_dir: Path) -> None:
    # A listening socket whose group may read but not write: connect(2) needs write.
    path = shared_dir / f"ro-{os.urandom(3).hex()}.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    try:
        os.chown(path, 0, SOCKET_GID)
        path.chmod(0o640)
        run = doctor("--host", f"unix://{path}", prefix=(*NOBODY, f"--groups={SOCKET_GID}"))
    finally:
        listener.close()
        path.unlink()
    (perm,) = run.by_check("socket.permissions")
    assert perm["status"] == "fail"
    assert f"`sudo chmod g+rw {path}`" in (perm["fix"] or "")
    assert run.status("daemon.reachable") == "fail"


def test_socket_in_a_folder_nobody_may_enter(doctor: Doctor, shared_dir: Path) -> None:
    private = shared_dir / f"private-{os.urandom(3).hex()}"
    private.mkdir(mode=0o700)
    path = private / "docker.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    try:
        path.chmod(0o666)
        run = doctor("--host", f"unix://{path}", prefix=(*NOBODY, "--clear-groups"))
    finally:
        listener.close()
        path.unlink()
        private.rmdir()
    (perm,) = run.by_check("socket.permissions")
    assert perm["status"] == "fail"
    assert f"may not enter the folder {private}" in (perm["detail"] or "")
    assert f"`sudo chmod o+x {private}`" in (perm["fix"] or "")
    assert run.code == 1


# --- DinD containers ----------------------------------------------------------------------


def _container(
    client: docker.DockerClient, image: str, name: str, **kwargs: object
) -> docker.models.containers.Container:
    return client.containers.run(
        image, name=name, detach=True, labels={"dockmoat.test": "ci-doctor"}, **kwargs
    )


def test_dind_without_privileges(
    doctor: Doctor,
    docker_client: docker.DockerClient,
    dind_image: str,
    unique_name: Callable[[str], str],
) -> None:
    name = unique_name("doctor-unpriv")
    container = _container(docker_client, dind_image, name, command=["dockerd"])
    try:
        deadline = time.monotonic() + 30
        while container.status != "exited" and time.monotonic() < deadline:
            time.sleep(0.3)
            container.reload()
        assert container.status == "exited", "an unprivileged dockerd was expected to die"
        run = doctor("--dind", name)
    finally:
        container.remove(force=True, v=True)
    assert run.code == 1
    assert run.status("dind.container") == "fail"
    (priv,) = run.by_check("dind.privileges")
    assert priv["status"] == "fail"
    assert "--privileged" in (priv["fix"] or "")
    logs = run.by_check("dind.logs")
    assert logs and all(f["status"] == "fail" for f in logs)
    # The line that killed it is quoted, with a fix that names the missing privilege.
    assert any("failed to start daemon" in (f["detail"] or "") for f in logs), logs
    assert any("privileged" in (f["fix"] or "") for f in logs)


def test_healthy_dind(doctor: Doctor, tls_daemon: TlsDaemon) -> None:
    run = doctor("--dind", tls_daemon.name)
    for check in ("dind.container", "dind.privileges", "dind.storage", "dind.mtu"):
        assert run.status(check) == "ok", (check, run.findings)
    assert f"MTU {1280}" in (run.by_check("dind.mtu")[0]["detail"] or "")
    assert all(f["status"] != "fail" for f in run.by_check("dind.logs"))


def test_dind_bridge_wider_than_its_network(
    doctor: Doctor,
    docker_client: docker.DockerClient,
    dind_image: str,
    unique_name: Callable[[str], str],
) -> None:
    # An overlay/VPN-like network with a small MTU; the nested daemon keeps its default 1500.
    network = docker_client.networks.create(
        unique_name("doctor-mtu"),
        driver="bridge",
        options={"com.docker.network.driver.mtu": "1300"},
        labels={"dockmoat.test": "ci-doctor"},
    )
    name = unique_name("doctor-mtu")
    container = _container(
        docker_client, dind_image, name, privileged=True, network=network.name, command=["dockerd"]
    )
    try:
        deadline = time.monotonic() + 60
        run = doctor("--dind", name)
        while run.status("dind.mtu") != "fail" and time.monotonic() < deadline:
            time.sleep(0.5)
            run = doctor("--dind", name)
    finally:
        container.remove(force=True, v=True)
        network.remove()
    (mtu,) = run.by_check("dind.mtu")
    assert mtu["status"] == "fail", run.findings
    assert "MTU 1500 > 1300" in (mtu["detail"] or "")
    assert "--mtu=1300" in (mtu["fix"] or "")
    assert run.code == 1


def test_unknown_dind_container(doctor: Doctor, unique_name: Callable[[str], str]) -> None:
    run = doctor("--dind", unique_name("nothing"))
    assert run.code == 1
    assert run.status("dind.container") == "fail"


def test_text_report_on_a_working_engine_and_a_dead_one(docker_host: str, tmp_path: Path) -> None:
    env = {**clean_env(), "DOCKER_CONFIG": str(tmp_path)}
    good = dockmoat_cli("doctor", "--host", docker_host, env=env)
    assert good.returncode == 0, good.stdout
    assert good.stdout.startswith("ok    daemon.reachable")
    assert "API 1." in good.stdout
    assert " 0 fail" in good.stdout.splitlines()[-1]
    dead = dockmoat_cli("doctor", "--host", f"unix://{tmp_path}/gone.sock", env=env)
    assert dead.returncode == 1
    assert dead.stdout.startswith("fail  daemon.reachable")
    assert "fix: start the daemon" in dead.stdout


def test_a_dind_up_daemon_through_its_context(
    doctor: Doctor, dind_image: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    # `dockmoat dind up` issues client certificates from a CA of their own: ca.pem only
    # vouches for the daemon. Doctor must judge that by the daemon's answer, not fail it.
    name = unique_name("doc")
    env = {**clean_env(), "DOCKER_CONFIG": str(tmp_path)}
    up = dockmoat_cli(
        "dind", "up", name, "--image", dind_image, "-q", "--no-pool", env=env, timeout=180
    )
    assert up.returncode == 0, up.stderr
    try:
        run = doctor("--context", f"dockmoat-{name}", env={"DOCKER_CONFIG": str(tmp_path)})
        dind = doctor("--dind", f"dockmoat-dind-{name}")
    finally:
        dockmoat_cli("dind", "down", name, env=env, timeout=180)
    assert run.code == 0, run.findings
    assert run.status("tls.client-chain") == "ok"
    assert "accepted" in (run.by_check("tls.client-chain")[0]["detail"] or "")
    assert run.status("tls.server-san") == "ok"
    for check in ("dind.container", "dind.privileges", "dind.storage"):
        assert dind.status(check) == "ok", dind.findings
    assert all(f["status"] == "ok" for f in dind.by_check("dind.logs")), dind.findings
