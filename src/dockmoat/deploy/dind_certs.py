"""TLS material for the dockmoat DinD image, in the layout the official `docker:dind`
entrypoint uses, so compose files written for it work unchanged (docs/deploy.md).

    python -m dockmoat.deploy.dind_certs CERTDIR [SAN]...

writes CERTDIR/ca/cert.pem (the CA's key is never written: nothing else is ever
signed), CERTDIR/server/{ca,cert,key}.pem for dockerd and CERTDIR/client/{ca,cert,key}.pem
for its clients: ECDSA P-256 made in milliseconds by dockmoat.dind.certs instead of
the official image's RSA-4096 (seconds). The server certificate names this host's
name, `docker`, localhost, every SAN given (DNS names or IP addresses) and this
container's addresses. Made afresh at every start: a restarted daemon never serves an
expired certificate, and clients mount the client folder only after the daemon is
healthy. `DOCKMOAT_CLIENT_KEY_OWNER=UID:GID` gives the client folder's files to the
user that runs the jobs (a non-root runner container in the same pod).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from dockmoat.dind.certs import issue_daemon_certs, new_ca


def _split(sans: Sequence[str]) -> tuple[list[str], list[str]]:
    names: list[str] = []
    ips: list[str] = []
    for san in sans:
        value = san.removeprefix("DNS:").removeprefix("IP:").strip()
        if not value:
            continue
        try:
            ips.append(str(ipaddress.ip_address(value)))
        except ValueError:
            names.append(value)
    return names, ips


def _own_addresses() -> list[str]:
    try:
        from dockmoat.deploy.private_network import interface_addresses

        return [str(a) for _name, a in interface_addresses() if not a.is_link_local]
    except OSError:
        return []


def _owner(spec: str) -> tuple[int, int] | None:
    """`DOCKMOAT_CLIENT_KEY_OWNER=UID:GID`: who must read the client half (a non-root
    runner in the same pod); ValueError when malformed."""
    if not spec:
        return None
    uid, _, gid = spec.partition(":")
    return int(uid), int(gid or uid)


def write(certdir: Path, sans: Sequence[str], client_owner: tuple[int, int] | None = None) -> None:
    names, ips = _split([socket.gethostname(), "docker", *sans])
    ips += [ip for ip in _own_addresses() if ip not in ips]
    ca = new_ca("dockmoat dind CA")
    certs = issue_daemon_certs(ca, socket.gethostname(), names, ips)
    files = {
        "ca/cert.pem": ca.cert_pem,
        "server/ca.pem": certs.server_ca_pem,
        "server/cert.pem": certs.server.cert_pem,
        "server/key.pem": certs.server.key_pem,
        "client/ca.pem": certs.client_ca_pem,
        "client/cert.pem": certs.client.cert_pem,
        "client/key.pem": certs.client.key_pem,
    }
    for relative, data in files.items():
        path = certdir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        # Keys readable by their owner only; the client folder is shared read-only.
        tmp.chmod(0o600 if relative.endswith("key.pem") else 0o644)
        if client_owner is not None and relative.startswith("client/"):
            os.chown(tmp, *client_owner)
        tmp.replace(path)


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: python -m dockmoat.deploy.dind_certs CERTDIR [SAN]...", file=sys.stderr)
        return 2
    try:
        owner = _owner(os.environ.get("DOCKMOAT_CLIENT_KEY_OWNER", ""))
        write(Path(argv[0]), argv[1:], owner)
    except (OSError, ValueError) as error:
        print(f"dind-certs: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
