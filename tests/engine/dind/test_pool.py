"""`dockmoat dind pool`: hand-out over the control socket, replacement, clean exit."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dindtest_support import Dind

from dockmoat.dind import naming
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
