"""Warm pools with cache keys: a keyed warm daemon carries the previous job's layers
(classic builder and BuildKit), a key's volume never carries two daemons, and a key
the pool does not hold starts cold on its own volume."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dindtest_support import Dind

from dockmoat.dind import naming
from dockmoat.dind.info import DindInfo
from dockmoat.dind.pool import PoolService

CLASSIC = """\
FROM dockmoat-test/busybox:latest
RUN echo one > /one
RUN echo two > /two
RUN echo three > /three
"""
BUILDKIT = """\
FROM dockmoat-test/busybox:latest
RUN echo bk-one > /one
RUN echo bk-two > /two
"""


def _wait(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _holders(dind: Dind, key: str) -> list[str]:
    """Running containers on the key's volume (a data root must never have two)."""
    volume = naming.cache_volume_name(key)
    return [
        c.name for c in dind.client.containers.list(filters={"volume": volume, "status": "running"})
    ]


def _buildkit(dind: Dind, info: DindInfo, tag: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "build", "--progress=plain", "-t", tag, "-"],
        capture_output=True,
        text=True,
        check=True,
        input=BUILDKIT,
        env=dind.env(**info.env(), DOCKER_BUILDKIT="1"),
        timeout=240,
    )


def _image_id(dind: Dind, info: DindInfo, tag: str) -> str:
    out = dind.docker(info, "image", "inspect", "--format", "{{.Id}}", tag).stdout
    return out.strip()


@pytest.fixture
def keys(dind: Dind, unique_name: Callable[[str], str]) -> Iterator[tuple[str, str]]:
    pooled, other = unique_name("pcache"), unique_name("pcold")
    yield pooled, other
    for name in dind.names:
        with contextlib.suppress(Exception):
            dind.manager.down(name)
    for key in (pooled, other):
        with contextlib.suppress(Exception):
            dind.client.volumes.get(naming.cache_volume_name(key)).remove()


def test_pool_keeps_a_warm_daemon_per_cache_key(
    dind: Dind,
    dind_name: Callable[[], str],
    keys: tuple[str, str],
    busybox_image: str,
    tmp_path: Path,
) -> None:
    key, other_key = keys
    sock = tmp_path / "pool.sock"
    service = PoolService(dind.manager, dind.options(), 0, sock, cache_keys=(key,))
    overlap: list[list[str]] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            holders = _holders(dind, key)
            if len(holders) > 1:
                overlap.append(holders)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    threading.Thread(target=service.serve, daemon=True).start()

    def up(
        name: str, cache: str, *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return dind.cli(
            "dind", "up", name, "--image", dind.image, "--cache", cache,
            "--pool-socket", str(sock), "--format", "json", *extra, check=check,
        )  # fmt: skip

    def pooled(info: DindInfo) -> bool:
        labels = dind.client.api.inspect_container(info.container_id)["Config"]["Labels"]
        return labels.get(naming.LABEL_POOL) == service.pool_id

    def volume_of(info: DindInfo) -> list[str]:
        mounts = dind.client.api.inspect_container(info.container_id)["Mounts"]
        return [m["Name"] for m in mounts if m.get("Type") == "volume"]

    try:
        _wait(lambda: service.ready_for(key) == 1)
        (warm,) = _holders(dind, key)
        assert warm.startswith(naming.POOL_PREFIX)

        # 1. A warm daemon on the key's volume; the first job fills its cache.
        first_name = dind_name()
        first = DindInfo.from_json(json.loads(up(first_name, key).stdout))
        assert pooled(first) and first.cache == key
        assert volume_of(first) == [naming.cache_volume_name(key)]
        dind.manager.preload(first, (busybox_image,))
        cold = dind.docker(first, "build", "-t", "dmtest-pool-classic:1", "-", input=CLASSIC)
        assert "Using cache" not in cold.stdout
        classic_id = _image_id(dind, first, "dmtest-pool-classic:1")
        cold_bk = _buildkit(dind, first, "dmtest-pool-bk:1")
        assert "CACHED" not in cold_bk.stderr
        buildkit_id = _image_id(dind, first, "dmtest-pool-bk:1")

        # 2. Exclusive: while the job holds the key the pool keeps no daemon on it,
        # and another `up --cache KEY` is refused (no traceback, nothing made).
        time.sleep(1.5)
        assert service.ready_for(key) == 0
        busy_name = dind_name()
        busy = up(busy_name, key, check=False)
        assert busy.returncode == 3  # EngineError: the key is unavailable
        assert "in use" in busy.stderr and "Traceback" not in busy.stderr
        assert dind.client.containers.list(all=True, filters={"name": busy_name}) == []

        # 3. A key the pool does not hold: a cold start on that key's own volume.
        third = DindInfo.from_json(json.loads(up(dind_name(), other_key).stdout))
        assert not pooled(third) and third.cache == other_key
        assert volume_of(third) == [naming.cache_volume_name(other_key)]
        dind.manager.down(third.name)

        # 4. The job goes: the pool starts a warm daemon on the same volume, and the
        # next job's builds reuse every layer (classic and BuildKit).
        dind.manager.down(first_name)
        _wait(lambda: service.ready_for(key) == 1)
        second = DindInfo.from_json(json.loads(up(dind_name(), key).stdout))
        assert pooled(second) and second.container_id != first.container_id
        warm_build = dind.docker(second, "build", "-t", "dmtest-pool-classic:1", "-", input=CLASSIC)
        assert warm_build.stdout.count("Using cache") == 3
        assert _image_id(dind, second, "dmtest-pool-classic:1") == classic_id
        warm_bk = _buildkit(dind, second, "dmtest-pool-bk:1")
        assert warm_bk.stderr.count("CACHED") >= 2, warm_bk.stderr
        assert _image_id(dind, second, "dmtest-pool-bk:1") == buildkit_id

        # 5. `--wait-cache` while the pool also wants the key: whoever gets it first,
        # the waiting `up` ends with a daemon on the key's volume, never a second one.
        waiting_name = dind_name()
        dind.names.append(waiting_name)
        waiting = subprocess.Popen(
            [sys.executable, "-m", "dockmoat", "dind", "up", waiting_name, "--image",
             dind.image, "--cache", key, "--wait-cache", "120", "--pool-socket", str(sock),
             "--format", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dind.env(),
        )  # fmt: skip
        time.sleep(2)
        assert waiting.poll() is None, "the second up must wait while the key is busy"
        dind.manager.down(second.name)
        out, err = waiting.communicate(timeout=180)
        assert waiting.returncode == 0, err
        last = DindInfo.from_json(json.loads(out))
        assert last.cache == key and volume_of(last) == [naming.cache_volume_name(key)]
    finally:
        service.shutdown(wait=60)
        watching.set()
        watcher.join()
    assert overlap == []
