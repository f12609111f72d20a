"""Red team: `GET /images/search?term=HOST:PORT/x` makes dockerd connect to HOST.

dockerd takes the first path component of the term as the registry index when it
has a dot or a colon or is `localhost`, and connects to it (HTTPS, then plain
HTTP): a daemon-side fetch to loopback like a pull. The raw control shows the
connection arriving on a loopback listener; through the gateway the search must be
refused and the listener see nothing.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from policygw import Gateway
from rawdocker import call, engine_version, socket_of

pytestmark = pytest.mark.engine


class Listener:
    """A loopback server that accepts and closes every connection, counting them."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port: int = self.server.getsockname()[1]
        self.hits = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.hits += 1
            connection.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    served = Listener()
    yield served
    served.server.shutdown(socket.SHUT_RDWR)
    served.server.close()


@pytest.mark.host_namespaces  # the listener is on the host's loopback
def test_raw_engine_connects_to_a_loopback_search_index(
    listener: Listener, docker_host: str
) -> None:
    target = f"/v1.41/images/search?term=127.0.0.1:{listener.port}/x"
    engine = engine_version(socket_of(docker_host))
    status, answer = call(socket_of(docker_host), "GET", target)
    # The index did not answer like a registry: 20.10 reports that as a 500; 28.5 as
    # 400 "invalid registry endpoint ... HTTPS attempt ... HTTP attempt ..." (the ping
    # failure is classed as an invalid parameter there), after trying both schemes.
    assert status == (500 if engine.api <= (1, 41) else 400), (engine, answer)
    if status == 400:
        assert f"127.0.0.1:{listener.port}" in answer["message"], answer
    assert listener.hits > 0  # ...because the daemon reached the host's loopback


@pytest.mark.parametrize("index", ["127.0.0.1:{port}", "localhost:{port}", "127.1:{port}"])
def test_gateway_refuses_a_search_on_an_internal_index(
    index: str, listener: Listener, gateway: Gateway
) -> None:
    term = index.format(port=listener.port) + "/x"
    status, answer = call(str(gateway.socket), "GET", f"/v1.41/images/search?term={term}")
    assert status == 403, answer
    assert "images.registry-address" in answer["message"]
    assert listener.hits == 0
