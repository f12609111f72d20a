"""The engine's image listing behind BuildKit source policies (`Lookups.image_list`):
shared while under way and for `IMAGE_LIST_REUSE` seconds after it was asked for,
never when it failed; ownership is worked out afresh from it each time."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from dockmoat.tenancy import lookups
from dockmoat.tenancy.lookups import Lookups
from dockmoat.tenancy.model import TENANT_LABEL, Tenant
from dockmoat.tenancy.routes.build import foreign_images
from dockmoat.tenancy.store import OwnershipStore


class Engine:
    def __init__(self, answers: list[tuple[int, Any]]) -> None:
        self.answers = answers
        self.calls = 0
        self.gate: asyncio.Event | None = None

    async def call(
        self, method: str, path: str, query: Mapping[str, Any] | None = None, body: Any = None
    ) -> tuple[int, Any]:
        assert (method, path) == ("GET", "/images/json")
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return self.answers[min(self.calls, len(self.answers)) - 1]


def _image(ident: str, tag: str, owner: str | None) -> dict[str, Any]:
    return {"Id": ident, "RepoTags": [tag], "Labels": {TENANT_LABEL: owner} if owner else {}}


def _look(tmp_path: Path, engine: Engine) -> Lookups:
    store = OwnershipStore(tmp_path / "state.db")
    return Lookups(store, engine, socket_of=None, daemon_sockets=frozenset())


def test_a_listing_serves_the_builds_of_the_next_second_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = [_image("sha256:b1", "theirs:1", "job-b")]
    second = [*first, _image("sha256:b2", "new:1", "job-b")]
    engine = Engine([(200, first), (200, second)])
    look = _look(tmp_path, engine)
    a = Tenant.job("job-a")

    async def run() -> None:
        assert await foreign_images(look, a) == (frozenset({"theirs:1"}), frozenset({"sha256:b1"}))
        await foreign_images(look, a)  # the second Solve of the same `docker build`
        assert engine.calls == 1
        monkeypatch.setattr(lookups, "IMAGE_LIST_REUSE", 0.0)
        tags, ids = await foreign_images(look, a)  # too old now: asked again
        assert engine.calls == 2
        assert ids == {"sha256:b1", "sha256:b2"} and "new:1" in tags

    asyncio.run(run())


def test_ownership_is_worked_out_afresh_from_a_shared_listing(tmp_path: Path) -> None:
    engine = Engine([(200, [_image("sha256:b1", "theirs:1", "job-b")])])
    look = _look(tmp_path, engine)

    async def run() -> None:
        assert (await foreign_images(look, Tenant.job("job-a")))[1] == {"sha256:b1"}
        assert (await foreign_images(look, Tenant.job("job-b")))[1] == frozenset()
        look.store.add("job-b", "tag", "made:1")  # a tag claimed since the listing
        assert "made:1" in (await foreign_images(look, Tenant.job("job-a")))[0]
        assert engine.calls == 1

    asyncio.run(run())


def test_a_failed_listing_is_refused_to_everyone_waiting_and_never_reused(tmp_path: Path) -> None:
    engine = Engine([(500, None), (200, [])])
    look = _look(tmp_path, engine)

    async def run() -> None:
        engine.gate = asyncio.Event()
        waiting = [asyncio.ensure_future(look.image_list()) for _ in range(3)]
        await asyncio.sleep(0)
        engine.gate.set()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        assert engine.calls == 1  # one listing for the three
        assert await look.image_list() == []  # asked again at once
        assert engine.calls == 2

    asyncio.run(run())


def test_a_caller_that_goes_away_does_not_cancel_the_listing_of_the_others(
    tmp_path: Path,
) -> None:
    engine = Engine([(200, [_image("sha256:b1", "theirs:1", "job-b")])])
    look = _look(tmp_path, engine)

    async def run() -> None:
        engine.gate = asyncio.Event()
        first = asyncio.ensure_future(look.image_list())
        second = asyncio.ensure_future(look.image_list())
        await asyncio.sleep(0)
        first.cancel()
        engine.gate.set()
        assert [i["Id"] for i in await second] == ["sha256:b1"]
        assert first.cancelled() and engine.calls == 1

    asyncio.run(run())
