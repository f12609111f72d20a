"""The image's health check: `GET /_ping` through dockmoat's own listener.

    python -m dockmoat.deploy.health [URL]

URL is `unix:///path` or `tcp://HOST:PORT` (plain; a mutual-TLS listener is checked
through one of the others). Without it: `$DOCKMOAT_HEALTH_URL`, else the first
unix or plain-TCP `--listen` of the `dockmoat serve` process in this container, else
serve's default socket. Exit 0 when the answer is 200 (the daemon answers through the
guard), 1 otherwise, with one line saying why. When no `dockmoat serve` runs here (the
image running `dind pool` or a one-off command), there is nothing to check: exit 0.
"""

from __future__ import annotations

import os
import socket
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


def ping(url: str, timeout: float = 3.0) -> str | None:
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
        else:
            return f"{url}: expected unix:///path or tcp://HOST:PORT"
    except (OSError, ValueError) as error:
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
    if argv:
        url = argv[0]
    elif os.environ.get("DOCKMOAT_HEALTH_URL"):
        url = os.environ["DOCKMOAT_HEALTH_URL"]
    else:
        urls = _serve_listeners()
        if urls is None:
            print("no dockmoat serve runs here: nothing to check")
            return 0
        plain = [u for u in urls if u.startswith("unix://")] or urls
        url = plain[0]
    problem = ping(url)
    if problem is not None:
        print(problem)
        return 1
    print(f"{url}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
