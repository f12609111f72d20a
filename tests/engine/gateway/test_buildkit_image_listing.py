"""The image listing behind a BuildKit build's source policy, through `dockmoat serve`
(tenancy/imagewatch.py): kept while the engine's image events say nothing changed, so
a build that changes no image lists nothing, and dropped by the first image event, so
a foreign tag made on the raw socket by another party is refused to the next build.

The gateway's upstream is a relay on a socket of the test's own, which counts the
listings tenancy asks the engine for (`GET /v1.41/images/json`, tenancy/engine.py).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from docker.errors import NotFound
from gwserve import Served, start_serve
from test_buildkit import DOCKER, build_foreign_image

from support.docker_cli import build

LISTING = b"GET /v1.41/images/json HTTP/1.1\r\n"


class CountingRelay:
    """A unix socket relaying every connection to the engine's, counting the image
    listings asked on the way (a request line may be cut across reads)."""

    def __init__(self, path: Path, engine: str) -> None:
        self.path = path
        self.engine = engine
        self.listings = 0
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.engine)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        tail = b""
        try:
            while data := source.recv(65536):
                if count:
                    seen = tail + data
                    with self._lock:
                        self.listings += seen.count(LISTING)
                    tail = seen[-(len(LISTING) - 1) :]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def counted(tmp_path: Path, docker_host: str) -> Iterator[tuple[Served, CountingRelay]]:
    assert docker_host.startswith("unix://"), "the relay needs the engine's unix socket"
    relay = CountingRelay(tmp_path / "engine.sock", docker_host.removeprefix("unix://"))
    served = start_serve(
        tmp_path / "gw", f"unix://{relay.path}", tenant=f"listing{secrets.token_hex(3)}"
    )
    yield served, relay
    assert served.stop() == 0
    relay.close()


def _followed(served: Served) -> None:
    """Wait until the gateway says it follows the engine's image events."""
    deadline = time.monotonic() + 20
    while "following the engine's image events" not in served.log.read_text():
        assert time.monotonic() < deadline, served.log.read_text()[-2000:]
        time.sleep(0.05)


def test_a_build_that_changes_no_image_lists_none_and_a_foreign_tag_made_outside_is_seen(
    counted: tuple[Served, CountingRelay],
    busybox_image: str,
    docker_client: docker.DockerClient,
    docker_host: str,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    served, relay = counted
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo listing > /listing\n")

    def to_client(*extra: str) -> str:
        out = tmp_path / secrets.token_hex(4)
        result = build(DOCKER, served.host, "build", *extra, "--output",
                       f"type=local,dest={out}", ".", cwd=ctx)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert (out / "listing").read_text() == "listing\n"
        return result.stderr

    to_client()  # the first build lists, and the gateway starts following the events
    _followed(served)
    # (a) The next build's Solves (two with buildx) list nothing: its export goes to the
    # client, no image changed. Other work on the shared engine changes images now and
    # then (each change is one listing more, as it must be): one build in a few without
    # any change is enough to show that the listing is kept.
    spent = []
    for _ in range(5):
        before = relay.listings
        to_client()
        spent.append(relay.listings - before)
        if spent[-1] == 0:
            break
    assert 0 in spent, f"listings per build: {spent}"
    assert served.audit_where(route="buildkit.Control.Solve", decision="rewrite")

    # (b) Another tenant's image, tagged under a new name by another party on the raw
    # socket, right after a build kept the listing: the next build does not resolve it.
    foreign = f"{unique_name('foreign')}:1"
    alias = f"{unique_name('alias')}:1"
    build_foreign_image(docker_client, busybox_image, tmp_path / "made", foreign)
    try:
        to_client()  # a listing kept again (the image just made dropped the last one)
        (ctx / "Dockerfile.named").write_text("FROM base\nRUN cat /theirs\n")
        # A named context: the Dockerfile the guard reads names only `base`; the image
        # BuildKit resolves for it is held by the Solve's source policy alone, the one
        # made from the listing.
        named = ("-f", "Dockerfile.named", "--build-context", f"base=docker-image://{alias}")
        docker_client.images.get(foreign).tag(alias)  # the raw socket: no guard sees it
        listed = relay.listings
        out = tmp_path / "refused"
        guarded = build(DOCKER, served.host, "build", *named, "--output",
                        f"type=local,dest={out}", ".", cwd=ctx)  # fmt: skip
        assert guarded.returncode != 0, guarded.stderr[-2000:]
        assert "denied by policy" in guarded.stderr, guarded.stderr[-2000:]
        assert not (out / "theirs").exists()
        assert relay.listings > listed  # the tag event dropped the kept listing
        # The crossing is real: on the raw socket, BuildKit resolves the alias.
        raw = build(DOCKER, docker_host, "build", *named, "--output",
                    f"type=local,dest={tmp_path / 'raw'}", ".", cwd=ctx)  # fmt: skip
        assert raw.returncode == 0, raw.stderr[-2000:]
        assert (tmp_path / "raw" / "theirs").read_text() == "theirs\n"
    finally:
        for tag in (alias, foreign):
            with contextlib.suppress(NotFound):
                docker_client.images.remove(tag, force=True)
