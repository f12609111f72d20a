"""Pure checks on the daemon: is it reachable (and how), its storage driver, its own warnings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dockmoat.ci.doctor.config import Target, TlsSettings
from dockmoat.ci.doctor.facts import ConnectError, PingResult, RawResponse
from dockmoat.ci.doctor.model import Finding, fail, ok, warn

REACHABLE = "daemon.reachable"
TRANSPORT = "daemon.transport"
STORAGE = "daemon.storage-driver"
WARNINGS = "daemon.warnings"
BRIDGE_MTU = "daemon.bridge-mtu"

_HTTPS_ONLY = b"Client sent an HTTP request to an HTTPS server"
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class PingReply:
    status: int
    headers: dict[str, str]
    body: bytes


def parse_reply(data: bytes) -> PingReply | None:
    """Read an HTTP/1.x response head and body; None when it is not HTTP at all."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        return None
    try:
        status = int(status_line[1])
    except ValueError:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return PingReply(status, headers, body)


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    rest = body
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def _start_fix(target: Target) -> str:
    if target.scheme == "unix" and target.path == "/var/run/docker.sock":
        return "start the daemon (`sudo systemctl start docker`, or `sudo dockerd &`)"
    return (
        f"start the daemon listening on {target.url}, or point --host/DOCKER_HOST at the "
        "address it really listens on (`unix:///var/run/docker.sock` by default)"
    )


def _how(target: Target, tls: TlsSettings | None) -> str:
    if target.scheme == "unix":
        return f"unix socket {target.path}"
    if tls is None:
        return f"plain TCP {target.host}:{target.port} (no TLS)"
    mode = "mutual TLS, verified" if tls.verify else "TLS without verifying the server"
    return f"TCP {target.host}:{target.port} with {mode}"


def check_reachable(
    target: Target, tls: TlsSettings | None, result: PingResult
) -> tuple[Finding, str | None]:
    """The daemon's `/_ping`; returns the finding and the API version it announced."""
    where = f"{target.url} (from {target.source})"
    if isinstance(result, ConnectError):
        return _connect_failure(target, tls, where, result), None
    return _reply_finding(target, tls, where, result)


def _connect_failure(
    target: Target, tls: TlsSettings | None, where: str, error: ConnectError
) -> Finding:
    kind = error.kind
    if kind == "unsupported":
        return fail(
            REACHABLE,
            f"doctor cannot probe {where}: {error.message}",
            "run `dockmoat doctor` on the machine of that daemon, against its local socket",
        )
    if kind == "missing":
        return fail(
            REACHABLE, f"no socket at {target.path}: no daemon listens there", _start_fix(target)
        )
    if kind == "refused":
        return fail(
            REACHABLE, f"nothing listens at {where}: connection refused", _start_fix(target)
        )
    if kind == "permission":
        return fail(
            REACHABLE,
            f"permission denied connecting to {where}",
            "see the socket.permissions check below for the exact fix",
        )
    if kind == "timeout":
        return fail(
            REACHABLE,
            f"{where} did not answer in time ({error.message})",
            "check the address, firewalls between here and the daemon, and that the daemon "
            "is not hung (`docker logs` of a DinD container, `journalctl -u docker` on a host)",
        )
    if kind == "resolve":
        return fail(
            REACHABLE,
            f"cannot resolve {target.host}: {error.message}",
            "use a name this machine resolves: in CI the DinD service's alias (e.g. `docker`), "
            "on a user-defined network the container name",
        )
    if kind == "tls-verify":
        return fail(
            REACHABLE,
            f"the daemon's certificate was refused at {where}: {error.message}",
            "see the tls.server-* checks: the server certificate must chain to "
            "DOCKER_CERT_PATH/ca.pem "
            f"and name {target.host} in its SANs",
        )
    if kind == "tls-plain-server":
        return fail(
            REACHABLE,
            f"{where} does not speak TLS ({error.message})",
            f"this is a plain-HTTP daemon port (usually 2375): enable TLS on the daemon "
            f"(DOCKER_TLS_CERTDIR=/certs for docker:dind) and use port {2376}",
        )
    if kind == "tls-rejected":
        return fail(
            REACHABLE,
            f"the daemon rejected this client's certificate at {where}: {error.message}",
            "use the client certificates the daemon issued (cert.pem/key.pem signed by its "
            "ca.pem, e.g. the `client` folder of DOCKER_TLS_CERTDIR), mounted read-only at "
            "DOCKER_CERT_PATH",
        )
    if kind == "tls":
        return fail(REACHABLE, f"TLS failed at {where}: {error.message}", "see the tls.* checks")
    return fail(REACHABLE, f"cannot connect to {where}: {error.message}", _start_fix(target))


def _reply_finding(
    target: Target, tls: TlsSettings | None, where: str, result: RawResponse
) -> tuple[Finding, str | None]:
    if _HTTPS_ONLY in result.data:
        return (
            fail(
                REACHABLE,
                f"{where} expects TLS but this client spoke plain HTTP",
                "set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to the client certificates "
                "(ca.pem, cert.pem, key.pem), or pass --tlsverify",
            ),
            None,
        )
    reply = parse_reply(result.data)
    if reply is None:
        return fail(
            REACHABLE, f"{where} answered something that is not HTTP", _start_fix(target)
        ), None
    if reply.status != 200 or reply.body.strip() != b"OK":
        return (
            fail(
                REACHABLE,
                f"{where} answered /_ping with HTTP {reply.status}: "
                "not a Docker daemon or an unhealthy one",
                "point --host/DOCKER_HOST at the Docker daemon",
            ),
            None,
        )
    api = reply.headers.get("api-version")
    server = reply.headers.get("server", "")
    detail = f"the daemon answers at {where} over {_how(target, tls)}"
    if api:
        detail += f"; API {api}"
    if server:
        detail += f" ({server})"
    return ok(REACHABLE, detail), api


def check_transport(target: Target, tls: TlsSettings | None) -> Finding | None:
    """Plain TCP hands the daemon (root on its host) to anyone who can reach the port."""
    if target.scheme != "tcp":
        return None
    if tls is None:
        detail = f"{target.url} is plain TCP: whoever reaches the port is root on the daemon's host"
        fix = (
            "use TLS: port 2376 with DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH (docker:dind makes "
            "the certificates when DOCKER_TLS_CERTDIR=/certs), or a unix socket"
        )
        if (target.host or "") in _LOOPBACK:
            return warn(TRANSPORT, detail + " (loopback only here)", fix)
        return fail(TRANSPORT, detail, fix)
    if not tls.verify:
        return warn(
            TRANSPORT,
            f"TLS without verification at {target.url}: a man in the middle goes unnoticed",
            "set DOCKER_TLS_VERIFY=1 (or --tlsverify) with the daemon's ca.pem in DOCKER_CERT_PATH",
        )
    return ok(TRANSPORT, f"mutual TLS to {target.url}")


def check_storage(info: dict[str, Any]) -> Finding:
    driver = str(info.get("Driver") or "")
    status = {str(k): str(v) for k, v in (info.get("DriverStatus") or []) if k}
    backing = status.get("Backing Filesystem", "")
    if driver == "vfs":
        return warn(
            STORAGE,
            "storage driver vfs: every layer is a full copy (slow builds, lots of disk); "
            "a daemon falls back to it when overlay2 cannot work, typically inside a container "
            "whose /var/lib/docker lies on overlayfs",
            "give the daemon a real filesystem for its data (for DinD: a volume at "
            "/var/lib/docker, `-v dind-data:/var/lib/docker`) and let it use overlay2",
        )
    if driver.startswith("overlay") and backing.lower() in ("overlayfs", "overlay"):
        return fail(
            STORAGE,
            f"storage driver {driver} on top of overlayfs (overlay on overlay) "
            "does not work reliably",
            "mount a volume at /var/lib/docker of the nested daemon "
            "(`-v dind-data:/var/lib/docker`)",
        )
    if driver in ("aufs", "devicemapper", "overlay"):
        return warn(
            STORAGE,
            f"storage driver {driver} is deprecated",
            "switch the daemon to overlay2 "
            "(`--storage-driver overlay2` on ext4 or xfs with d_type)",
        )
    if status.get("Supports d_type", "").lower() == "false":
        return fail(
            STORAGE,
            f"storage driver {driver} on a filesystem without d_type support",
            "put /var/lib/docker on ext4, or on xfs formatted with ftype=1",
        )
    shown = f"{driver} on {backing}" if backing else driver or "unknown"
    return ok(STORAGE, f"storage driver {shown}")


def check_warnings(info: dict[str, Any]) -> Finding | None:
    lines = [str(w) for w in (info.get("Warnings") or [])]
    if not lines:
        return None
    return warn(
        WARNINGS,
        "the daemon reports: " + "; ".join(lines),
        "address each warning in the daemon's configuration (`docker info` shows them)",
    )


def check_bridge_mtu(bridge: int | None, uplink: tuple[str, int]) -> Finding | None:
    """The local daemon's docker0 against this host's uplink (cloud VMs often have 1450 or less)."""
    if bridge is None:
        return None
    name, mtu = uplink
    if bridge > mtu:
        return warn(
            BRIDGE_MTU,
            f"docker0 MTU {bridge} > {mtu} of the host's {name}: containers' large packets to the "
            "outside can be dropped (hanging pulls, stalled TLS) where path MTU discovery "
            "is blocked",
            f'set `"mtu": {mtu}` in /etc/docker/daemon.json (or `dockerd --mtu={mtu}`) '
            "and restart the daemon",
        )
    return ok(BRIDGE_MTU, f"docker0 MTU {bridge} <= {mtu} of the host's {name}")
