"""`dockmoat dind pool`: hand-out over the control socket, replacement, clean exit."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from dindtest_support import Dind

from dockmoat.dind import naming, probe
from dockmoat.dind.acquire import acquire
from dockmoat.dind.info import DindInfo
from dockmoat.dind.pool import PoolService


def _wait(predicate: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_pool_hands_out_and_replaces(
    dind: Dind, dind_name: Callable[[], str], tmp_path: Path
) -> None:
    sock = tmp_path / "pool.sock"
    service = PoolService(dind.manager, dind.options(), 1, sock)
    thread = threading.Thread(target=service.serve, daemon=True)
    thread.start()
    try:
        _wait(lambda: service.ready_count() == 1)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        pool_label = f"{naming.LABEL_POOL}={service.pool_id}"
        (warm,) = dind.client.containers.list(filters={"label": pool_label})
        assert warm.name.startswith(naming.POOL_PREFIX)

        name = dind_name()
        started = time.monotonic()
        up = dind.cli(
            "dind",
            "up",
            name,
            "--image",
            dind.image,
            "--pool-socket",
            str(sock),
            "--format",
            "json",
        )
        info = DindInfo.from_json(json.loads(up.stdout))
        assert info.container_id == warm.id  # the warm daemon, renamed
        assert dind.client.containers.get(warm.id).name == naming.container_name(name)
        assert time.monotonic() - started < 30
        assert dind.docker(info, "version", "--format", "{{.Server.Version}}").stdout.strip()
        assert dind.docker(info, "ps", "-q").returncode == 0

        # A replacement starts at once; the handed-out daemon never returns.
        _wait(lambda: service.ready_count() == 1)
        pooled = dind.client.containers.list(filters={"label": pool_label})
        names = {c.name for c in pooled}
        instances = {c.labels[naming.LABEL_INSTANCE] for c in pooled}
        assert naming.container_name(name) in names
        assert len(names) == 2

        # A request the pool cannot serve (other shape) falls back to a cold start.
        other = dind.cli(
            "dind",
            "up",
            dind_name(),
            "--image",
            dind.image,
            "--memory",
            "1g",
            "--pool-socket",
            str(sock),
            "--format",
            "json",
        )
        assert DindInfo.from_json(json.loads(other.stdout)).container_id != warm.id
        assert service.ready_count() == 1
    finally:
        service.stop()
        thread.join(180)
    # On exit the pool removes what it still holds, never what it handed out.
    left = {c.name for c in dind.client.containers.list(all=True, filters={"label": pool_label})}
    assert left == {naming.container_name(name)}
    assert not sock.exists()
    dind.manager.down(name)
    assert dind.client.containers.list(all=True, filters={"label": pool_label}) == []
    for instance in instances:
        assert dind.instance_resources(instance) == {
            "containers": [],
            "networks": [],
            "volumes": [],
        }


class _KilledAfterItsCheck(PoolService):
    """A pool whose warm daemon is `docker kill`ed right after the pool's last /_ping
    before a hand-out: the window in which a kill (an OOM, an engine hiccup) used to
    make `acquire` hand a dead daemon on (`run --mode dind` gave it to the job)."""

    def __init__(self, client: docker.DockerClient, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = client
        self.killed: str | None = None
        self._local = threading.local()

    def take(self, name: str, shape: object) -> dict[str, Any]:
        self._local.taking = True
        try:
            return super().take(name, shape)
        finally:
            self._local.taking = False

    def _alive(self, warm: Any) -> bool:
        alive = super()._alive(warm)
        # Only the check before a hand-out, not the 10 s health check (another thread).
        if alive and getattr(self._local, "taking", False) and self.killed is None:
            self.killed = warm.container
            self.client.api.kill(warm.container)
        return alive


def test_a_warm_daemon_killed_after_the_pools_check_is_not_handed_on(
    dind: Dind, dind_name: Callable[[], str], tmp_path: Path
) -> None:
    sock = tmp_path / "pool.sock"
    options = dind.options()
    service = _KilledAfterItsCheck(dind.client, dind.manager, options, 1, sock)
    thread = threading.Thread(target=service.serve, daemon=True)
    thread.start()
    name = dind_name()
    dind.names.append(name)
    try:
        _wait(lambda: service.ready_count() == 1)
        said: list[str] = []
        info, _ = acquire(name, options, lambda: dind.manager, said.append, socket_path=sock)
        assert service.killed is not None, "the pool handed out no warm daemon"
        # What acquire hands on answers over its mTLS; the dead one is gone, not NAME's.
        assert probe.ping(info.host_address, info.port, probe.tls_context(info.cert_path), 5.0)
        assert info.container_id != service.killed
        with pytest.raises(docker.errors.NotFound):
            dind.client.containers.get(service.killed)
        assert dind.client.containers.get(info.container_id).name == naming.container_name(name)
        assert any("does not answer /_ping" in line for line in said), said
    finally:
        service.stop()
        thread.join(180)
    dind.manager.down(name)
    pool_label = f"{naming.LABEL_POOL}={service.pool_id}"
    assert dind.client.containers.list(all=True, filters={"label": pool_label}) == []
