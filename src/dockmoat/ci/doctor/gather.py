"""The I/O half of doctor: gather facts (files, sockets, the engine) and run the pure checks."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.tls

from dockmoat.ci.doctor import checks_daemon, checks_dind, checks_socket, checks_tls, probe
from dockmoat.ci.doctor.config import DoctorConfig, Target, TlsSettings
from dockmoat.ci.doctor.facts import CallerFacts, DindFacts, FileRead, RawResponse, SocketFacts
from dockmoat.ci.doctor.model import Finding, fail
from dockmoat.netinfo import host_uplink
from dockmoat.sdkerrors import SDK_ERRORS

MAX_FILE = 1024 * 1024
LOG_TAIL = 300
_NET_SCRIPT = (
    'for i in /sys/class/net/*; do echo "${i##*/} $(cat $i/mtu)"; done; '
    "echo ---; cat /proc/net/route"
)
_NESTED_SCRIPT = (
    "docker info --format '{{.Driver}}' 2>/dev/null; echo ---; "
    "docker network inspect bridge --format "
    "'{{index .Options \"com.docker.network.driver.mtu\"}}' 2>/dev/null"
)
# Doctor records what failed instead of stopping: the SDK's errors (sdkerrors) and the
# socket's own.
_ENGINE_ERRORS: tuple[type[Exception], ...] = (*SDK_ERRORS, OSError)


def read_file(path: Path) -> FileRead:
    try:
        with path.open("rb") as handle:
            return FileRead(str(path), data=handle.read(MAX_FILE))
    except FileNotFoundError:
        return FileRead(str(path), error="missing")
    except OSError as error:
        return FileRead(str(path), error=error.strerror or str(error))


def _blocked_dir(path: str) -> str | None:
    for folder in reversed(Path(path).parents):
        if not os.access(folder, os.X_OK, effective_ids=os.access in os.supports_effective_ids):
            return str(folder)
    return None


def socket_facts(path: str) -> SocketFacts:
    try:
        info = Path(path).stat()
    except PermissionError:
        # The file cannot even be looked at: a folder on the way is closed to this user.
        return SocketFacts(path=path, exists=True, blocked_dir=_blocked_dir(path))
    except OSError:
        return SocketFacts(path=path, exists=False)
    owner: str | None
    group: str | None
    members: tuple[str, ...] = ()
    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = None
    try:
        entry = grp.getgrgid(info.st_gid)
        group, members = entry.gr_name, tuple(entry.gr_mem)
    except KeyError:
        group = None
    return SocketFacts(
        path=path,
        exists=True,
        blocked_dir=_blocked_dir(path),
        is_socket=stat.S_ISSOCK(info.st_mode),
        mode=info.st_mode,
        uid=info.st_uid,
        gid=info.st_gid,
        owner_name=owner,
        group_name=group,
        group_members=members,
    )


def caller_facts() -> CallerFacts:
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return CallerFacts(
        uid=uid,
        user=user,
        gids=frozenset([os.getegid(), *os.getgroups()]),
        in_container=Path("/.dockerenv").exists(),
    )


def local_mtu(iface: str) -> int | None:
    try:
        return int(Path(f"/sys/class/net/{iface}/mtu").read_text())
    except (OSError, ValueError):
        return None


def engine_client(
    target: Target, tls: TlsSettings | None, api: str | None, timeout: float
) -> docker.APIClient:
    tls_config: docker.tls.TLSConfig | bool = False
    if tls is not None and target.scheme == "tcp":
        tls_config = docker.tls.TLSConfig(
            client_cert=(str(tls.cert), str(tls.key)),
            ca_cert=str(tls.ca) if tls.verify else None,
            verify=tls.verify,
        )
    client = docker.APIClient(
        base_url=target.url, tls=tls_config, version=api or "1.41", timeout=int(timeout)
    )
    # REQUESTS_CA_BUNDLE and friends would otherwise replace the daemon's CA.
    client.trust_env = False
    return client


def _exec(client: docker.APIClient, name: str, cmd: list[str]) -> tuple[int, str]:
    exec_id = client.exec_create(name, cmd, stdout=True, stderr=True)["Id"]
    output = client.exec_start(exec_id)
    code = client.exec_inspect(exec_id).get("ExitCode")
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else ""
    return (code if isinstance(code, int) else 1), text


def dind_facts(client: docker.APIClient, name: str) -> DindFacts:
    try:
        inspect: dict[str, Any] = client.inspect_container(name)
    except docker.errors.NotFound:
        return DindFacts(name=name, found=False)
    state = inspect.get("State") or {}
    host_config = inspect.get("HostConfig") or {}
    running = bool(state.get("Running"))
    logs_raw = client.logs(name, stdout=True, stderr=True, tail=LOG_TAIL)
    logs = logs_raw.decode("utf-8", "replace") if isinstance(logs_raw, bytes) else ""
    facts: dict[str, Any] = {}
    if running:
        try:
            code, text = _exec(client, name, ["sh", "-c", _NET_SCRIPT])
            if code == 0:
                mtus, _, routes = text.partition("---\n")
                facts["net_mtus"], facts["routes"] = mtus, routes
            else:
                facts["exec_error"] = text.strip()[:200] or f"exit code {code}"
            code, text = _exec(client, name, ["sh", "-c", _NESTED_SCRIPT])
            driver, _, mtu = text.partition("---")
            if driver.strip():
                facts["nested_driver"] = driver.strip().splitlines()[-1]
            # The bridge network's configured MTU; docker0 shows 1500 until a port joins it.
            if mtu.strip().isdigit():
                facts["nested_bridge_mtu"] = int(mtu.strip())
            if not driver.strip():
                # No CLI or no local socket: the driver's folder under image/ tells which was used.
                code, text = _exec(client, name, ["ls", "/var/lib/docker/image"])
                if code == 0 and text.split():
                    facts["nested_driver"] = text.split()[0]
        except _ENGINE_ERRORS as error:
            facts["exec_error"] = str(error)[:200]
    return DindFacts(
        name=name,
        found=True,
        running=running,
        status=str(state.get("Status", "")),
        exit_code=int(state.get("ExitCode") or 0),
        privileged=bool(host_config.get("Privileged")),
        runtime=str(host_config.get("Runtime") or ""),
        mount_points=tuple(str(m.get("Destination", "")) for m in inspect.get("Mounts") or []),
        logs=logs,
        **facts,
    )


def diagnose(config: DoctorConfig, now: datetime | None = None) -> list[Finding]:
    """Every check that applies to `config`, in report order."""
    now = now or datetime.now(UTC)
    target, tls = config.target, config.tls
    findings: list[Finding] = []
    material: checks_tls.ClientMaterial | None = None

    if tls is not None:
        key_mode: int | None
        try:
            key_mode = tls.key.stat().st_mode
        except OSError:
            key_mode = None
        files, material = checks_tls.check_files(
            tls, read_file(tls.ca), read_file(tls.cert), read_file(tls.key), key_mode
        )
        findings += files

    ping = probe.ping(target, tls, config.timeout)
    if material is not None:
        accepted = (
            True
            if isinstance(ping, RawResponse)
            else (False if ping.kind == "tls-rejected" else None)
        )
        findings += checks_tls.check_client(material, now, accepted)
    reachable, api = checks_daemon.check_reachable(target, tls, ping)
    findings.append(reachable)
    transport = checks_daemon.check_transport(target, tls)
    if transport is not None:
        findings.append(transport)

    if tls is not None and target.scheme == "tcp":
        der = probe.server_certificate(target, tls, config.timeout)
        if isinstance(der, bytes):
            findings += checks_tls.check_server(
                der, target.host or "", material.ca if material else None, now
            )

    if target.scheme == "unix" and target.path:
        permission = checks_socket.check_socket(socket_facts(target.path), caller_facts())
        if permission is not None:
            findings.append(permission)

    if api is None:
        return findings
    try:
        client = engine_client(target, tls, api, config.timeout)
    except _ENGINE_ERRORS as error:
        findings.append(
            fail(
                checks_daemon.REACHABLE,
                f"cannot use the engine API: {error}",
                "check the daemon's logs",
            )
        )
        return findings
    try:
        findings += _engine_checks(client, config, target)
    finally:
        client.close()
    return findings


def _engine_checks(client: docker.APIClient, config: DoctorConfig, target: Target) -> list[Finding]:
    findings: list[Finding] = []
    try:
        info: dict[str, Any] = client.info()
    except _ENGINE_ERRORS as error:
        findings.append(
            fail(
                checks_daemon.REACHABLE,
                f"/_ping answered but /info failed: {error}",
                "check the daemon's logs",
            )
        )
        return findings
    findings.append(checks_daemon.check_storage(info))
    warnings = checks_daemon.check_warnings(info)
    if warnings is not None:
        findings.append(warnings)
    uplink = host_uplink() if target.scheme == "unix" else None
    if uplink is not None:
        bridge = checks_daemon.check_bridge_mtu(local_mtu("docker0"), uplink)
        if bridge is not None:
            findings.append(bridge)

    if config.dind:
        try:
            facts = dind_facts(client, config.dind)
        except _ENGINE_ERRORS as error:
            findings.append(
                fail(
                    checks_dind.CONTAINER,
                    f"cannot inspect {config.dind}: {error}",
                    "check the name and the daemon",
                )
            )
            return findings
        findings.append(checks_dind.check_container(facts))
        if facts.found:
            findings.append(checks_dind.check_privileges(facts))
            findings += checks_dind.check_logs(facts)
            findings.append(checks_dind.check_storage(facts))
            mtu = checks_dind.check_mtu(facts, uplink)
            if mtu is not None:
                findings.append(mtu)
    return findings
