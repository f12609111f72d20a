"""The image's health check: `GET /_ping` through dockmoat's own listener.

    python -m dockmoat.deploy.health [URL [--tls-dir DIR]]

URL is `unix:///path` or `tcp://HOST:PORT`; with `--tls-dir DIR` the TCP connection
is mutual TLS with DIR/ca.pem, DIR/cert.pem and DIR/key.pem (a DinD daemon's client
half; the name checked is the URL's host). Without it: `$DOCKMOAT_HEALTH_URL`, else the first
unix or plain-TCP `--listen` of the `dockmoat serve` process in this container, else
serve's default socket. Exit 0 when the answer is 200 (the daemon answers through the
guard), 1 otherwise, with one line saying why. When no `dockmoat serve` runs here (the
image running `dind pool` or a one-off command), there is nothing to check: exit 0.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_URL = "unix:///run/dockmoat/docker.sock"


def listen_urls(argv: Sequence[str]) -> list[str] | None:
    """The `--listen` URLs of a `dockmoat serve` command line; None when it is not one."""
    args = list(argv)
    if "serve" not in args or not any(
        Path(a).name in ("dockmoat", "dockmoat-entrypoint") or a.endswith("dockmoat.cli")
        for a in args[:4]
    ):
        return None
    urls: list[str] = []
    for index, arg in enumerate(args):
        if arg == "--listen" and index + 1 < len(args):
            urls.append(args[index + 1])
        elif arg.startswith("--listen="):
            urls.append(arg.split("=", 1)[1])
    return urls or [DEFAULT_URL]


def _serve_listeners() -> list[str] | None:
    me = os.getpid()
    for entry in sorted(Path("/proc").iterdir(), key=lambda p: p.name.zfill(10)):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        urls = listen_urls([a.decode(errors="replace") for a in argv if a])
        if urls is not None:
            return urls
    return None


def _tls(sock: socket.socket, host: str, tls_dir: Path) -> socket.socket:
    context = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
    context.load_cert_chain(str(tls_dir / "cert.pem"), str(tls_dir / "key.pem"))
    return context.wrap_socket(sock, server_hostname=host)


def ping(url: str, timeout: float = 3.0, tls_dir: Path | None = None) -> str | None:
    """None when `GET /_ping` at URL answers 200, else what went wrong."""
    try:
        if url.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(timeout)
            sock.connect(url[len("unix://") :])
        elif url.startswith("tcp://"):
            hostport = url[len("tcp://") :].rstrip("/")
            host, _, port = hostport.rpartition(":")
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
            if tls_dir is not None:
                sock = _tls(sock, host.strip("[]"), tls_dir)
        else:
            return f"{url}: expected unix:///path or tcp://HOST:PORT"
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
        return f"{url}: cannot connect: {error}"
    with sock:
        try:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: dockmoat\r\n\r\n")
            head = sock.recv(64)
        except OSError as error:
            return f"{url}: {error}"
    parts = head.split()
    if len(parts) < 2 or parts[1] != b"200":
        status = parts[1].decode(errors="replace") if len(parts) > 1 else "no answer"
        return f"{url}: GET /_ping answered {status}"
    return None


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    tls_dir: Path | None = None
    if "--tls-dir" in args:
        at = args.index("--tls-dir")
        if at + 1 >= len(args):
            print("--tls-dir needs a folder")
            return 2
        tls_dir = Path(args[at + 1])
        del args[at : at + 2]
    if args:
        url = args[0]
    elif os.environ.get("DOCKMOAT_HEALTH_URL"):
        url = os.environ["DOCKMOAT_HEALTH_URL"]
    else:
        urls = _serve_listeners()
        if urls is None:
            print("no dockmoat serve runs here: nothing to check")
            return 0
        plain = [u for u in urls if u.startswith("unix://")] or urls
        url = plain[0]
    problem = ping(url, tls_dir=tls_dir)
    if problem is not None:
        print(problem)
        return 1
    print(f"{url}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
