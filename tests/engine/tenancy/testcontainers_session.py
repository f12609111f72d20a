"""A testcontainers-python session in a process of its own, for test_testcontainers_ryuk.py.

`python testcontainers_session.py IMAGE` starts, with Ryuk on, one container from
IMAGE that serves a page (busybox httpd on port 80, published by testcontainers),
reads the page through the published port, prints one JSON line (the session id,
the container's and Ryuk's names and ids as the client sees them, the page) and then
waits on stdin: the test kills it, as a CI runner kills a test run, and Ryuk is left
to reap. Everything is configured by the environment the test sets (DOCKER_HOST,
RYUK_CONTAINER_IMAGE, TESTCONTAINERS_*), as a user would configure it.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request

from testcontainers.core.container import DockerContainer, Reaper
from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

PAGE = "tc-ok"


def fetch(url: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return str(answer.read().decode().strip())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def reaper_acknowledged() -> int:
    """Start Ryuk as testcontainers does, then wait for Ryuk's ACK of the session filter.

    testcontainers-python (4.15.0; its issue #1114) connects to Ryuk without waiting
    for "Started!" (the wait strategy is set after the start) and never reads the ACK,
    and docker-proxy accepts on the published port before Ryuk listens: the filter can
    be lost without an error, and then nothing is reaped. As that issue suggests,
    reconnect and send it again until Ryuk answers. Returns the connections it took.
    """
    Reaper.get_instance()
    assert Reaper._container is not None and Reaper._socket is not None
    host = Reaper._container.get_container_host_ip()
    port = Reaper._container.get_exposed_port(8080)
    sock = Reaper._socket
    for attempt in range(1, 41):
        sock.settimeout(2)
        try:
            if sock.recv(16).startswith(b"ACK"):
                return attempt
        except OSError:
            pass
        sock.close()
        time.sleep(0.5)
        try:
            sock = socket.create_connection((host, port), timeout=2)
        except OSError:
            sock = socket.socket()
            continue
        sock.sendall(f"label={LABEL_SESSION_ID}={SESSION_ID}\r\n".encode())
        Reaper._socket = sock
    raise AssertionError("Ryuk never acknowledged the session filter")


def main(image: str) -> None:
    connections = reaper_acknowledged()
    command = f"mkdir /www && echo {PAGE} > /www/index.html && httpd -f -p 80 -h /www"
    container = DockerContainer(image).with_command(["sh", "-c", command]).with_exposed_ports(80)
    container.start()
    host, port = container.get_container_host_ip(), container.get_exposed_port(80)
    page = fetch(f"http://{host}:{port}/")
    inner = container.get_wrapped_container()
    assert Reaper._container is not None  # Ryuk is on: the first start made it
    ryuk = Reaper._container.get_wrapped_container()
    ryuk.reload()
    report = {
        "session": SESSION_ID,
        "container": {"id": inner.id, "name": inner.name},
        "ryuk": {"id": ryuk.id, "name": ryuk.name},
        "host": host,
        "port": port,
        "page": page,
        "ryuk_connections": connections,
    }
    print(json.dumps(report), flush=True)
    sys.stdin.read()  # until the test kills us (or closes stdin)


if __name__ == "__main__":
    main(sys.argv[1])
