"""PoolService with cache keys, against a fake manager: slots per key, exclusivity, shapes."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dind_helpers import warm_info

from dockmoat.dind import cache
from dockmoat.dind.info import DindInfo
from dockmoat.dind.pool import PoolService
from dockmoat.dind.spec import DindOptions
from dockmoat.errors import ConfigError


class FakeManager:
    """launch_warm/assign/destroy of DindManager, with keys a 'job' may hold."""

    host = None

    def __init__(self) -> None:
        self.busy: set[str] = set()  # keys whose volume a job's daemon holds
        self.launched: list[str | None] = []
        self.destroyed: list[str] = []
        self.slow: dict[str, threading.Event] = {}
        self._count = 0
        self.lock = threading.Lock()

    def progress(self, message: str) -> None:
        pass

    def launch_warm(self, options: DindOptions, who: str, pool_id: str) -> tuple[str, DindInfo]:
        key = options.cache
        if key in self.busy:
            raise cache.CacheBusy(key, "dockmoat-dind-job")
        if key in self.slow:
            self.slow[key].wait(10)
        with self.lock:
            self._count += 1
            number = self._count
            self.launched.append(key)
        info = warm_info(number, key)
        return info.container_id, info

    def assign(self, container: str, name: str, warm: DindInfo | None = None) -> DindInfo:
        assert warm is not None
        return dataclasses.replace(warm, name=name)

    def destroy(self, container: str) -> list[str]:
        self.destroyed.append(container)
        return []


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def fake() -> FakeManager:
    return FakeManager()


@pytest.fixture
def running(
    fake: FakeManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., PoolService]]:
    monkeypatch.setattr(PoolService, "_alive", lambda self, warm: True)
    monkeypatch.setattr("dockmoat.dind.pool._KEY_RETRY", 0.05)
    services: list[PoolService] = []

    def start(size: int, keys: tuple[str, ...] = ()) -> PoolService:
        service = PoolService(
            fake,  # type: ignore[arg-type]
            DindOptions(image="img"),
            size,
            tmp_path / f"pool{len(services)}.sock",
            cache_keys=keys,
        )
        threading.Thread(target=service.serve, daemon=True).start()
        services.append(service)
        return service

    yield start
    for service in services:
        service.shutdown(wait=5)


def _shape(service: PoolService, key: str | None = None) -> dict[str, Any]:
    shape = service.shape()
    if key is not None:
        shape["cache"] = key
    return shape


def test_one_warm_daemon_per_key_and_size_plain_ones(
    running: Callable[..., PoolService], fake: FakeManager
) -> None:
    service = running(2, ("a", "b"))
    _wait(lambda: service.ready_count() == 4)
    assert service.ready_for("a") == service.ready_for("b") == 1
    assert service.ready_for(None) == 2
    time.sleep(0.2)
    assert sorted(fake.launched, key=str) == sorted(["a", "b", None, None], key=str)


def test_a_key_is_handed_out_on_its_volume_and_refilled_only_once_free(
    running: Callable[..., PoolService], fake: FakeManager
) -> None:
    service = running(0, ("a",))
    _wait(lambda: service.ready_for("a") == 1)
    reply = service.take("job1", _shape(service, "a"))
    assert reply["ok"] is True
    assert reply["daemon"]["cache"] == "a"
    assert reply["daemon"]["name"] == "job1"
    # job1's daemon now holds the key's volume: no second daemon on it meanwhile.
    fake.busy.add("a")
    time.sleep(0.3)
    assert service.ready_for("a") == 0
    assert fake.launched == ["a"]
    assert service.take("job2", _shape(service, "a"))["reason"] == "empty"
    # job1 went down: the replacement starts on the same key.
    fake.busy.discard("a")
    _wait(lambda: service.ready_for("a") == 1)
    assert fake.launched == ["a", "a"]


def test_a_request_waits_for_its_keys_daemon_being_started(
    running: Callable[..., PoolService], fake: FakeManager
) -> None:
    fake.slow["a"] = threading.Event()
    service = running(0, ("a",))
    _wait(lambda: service._starting.get("a", 0) == 1)
    threading.Timer(0.3, fake.slow["a"].set).start()
    started = time.monotonic()
    reply = service.take("job1", _shape(service, "a"))
    assert reply["ok"] is True
    assert 0.2 < time.monotonic() - started < 5


def test_requests_the_pool_cannot_serve(
    running: Callable[..., PoolService], fake: FakeManager
) -> None:
    service = running(0, ("a",))
    _wait(lambda: service.ready_for("a") == 1)
    # Another key: cold start on that key's volume (the caller's part).
    assert service.take("job1", _shape(service, "other"))["reason"] == "shape"
    # No key: this pool holds only keyed daemons.
    assert service.take("job1", _shape(service))["reason"] == "shape"
    # Same key, other shape.
    assert service.take("job1", {**_shape(service, "a"), "memory": 1 << 30})["reason"] == "shape"
    assert service.take("job1", "garbage")["reason"] == "shape"
    assert service.ready_for("a") == 1  # nothing was handed out


def test_plain_requests_never_get_a_keyed_daemon(
    running: Callable[..., PoolService], fake: FakeManager
) -> None:
    service = running(1, ("a",))
    _wait(lambda: service.ready_count() == 2)
    reply = service.take("job1", _shape(service))
    assert reply["ok"] is True
    assert reply["daemon"]["cache"] is None
    assert service.ready_for("a") == 1


@pytest.mark.parametrize(
    ("size", "keys", "message"),
    [
        (0, (), "at least one --cache KEY"),
        (65, (), "between 0 and 64"),
        (1, ("bad key",), "invalid cache key"),
    ],
)
def test_bad_pool_settings_are_config_errors(
    tmp_path: Path, size: int, keys: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        PoolService(
            FakeManager(),  # type: ignore[arg-type]
            DindOptions(image="img"),
            size,
            tmp_path / "s",
            cache_keys=keys,
        )
