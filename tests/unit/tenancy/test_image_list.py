"""The engine's image listing behind BuildKit source policies (`Lookups.image_list`):
kept while the engine's image events are followed and none came since it was asked
for, asked afresh by each caller while they are not, never kept when it failed;
ownership is worked out afresh from it each time (tenancy/imagewatch.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dockmoat.tenancy import lookups
from dockmoat.tenancy.imagewatch import OpenEvents
from dockmoat.tenancy.lookups import Lookups
from dockmoat.tenancy.model import TENANT_LABEL, Tenant
from dockmoat.tenancy.routes.build import foreign_images
from dockmoat.tenancy.store import OwnershipStore


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    chunks: AsyncIterator[bytes]


class Events:
    """The engine's `/events` stream: what `send` sends, until `end`."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.opened = 0

    def send(self, action: str, kind: str = "image") -> None:
        self.queue.put_nowait(json.dumps({"Type": kind, "Action": action}).encode() + b"\n")

    def end(self) -> None:
        self.queue.put_nowait(None)

    async def _chunks(self) -> AsyncIterator[bytes]:
        while (data := await self.queue.get()) is not None:
            yield data

    def open(self, since: int) -> contextlib.AbstractAsyncContextManager[Answer]:
        self.opened += 1

        @contextlib.asynccontextmanager
        async def answer() -> AsyncIterator[Answer]:
            yield Answer(200, {}, self._chunks())

        return answer()


class Engine:
    """`GET /images/json` answers in turn; with `events`, an engine whose image events
    the lookups follow."""

    def __init__(self, answers: list[tuple[int, Any]], events: Events | None = None) -> None:
        self.answers = answers
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.events = events
        self.closed = False
        self.listed: Callable[[], None] | None = None  # runs while a listing is under way

    async def call(
        self, method: str, path: str, query: Mapping[str, Any] | None = None, body: Any = None
    ) -> tuple[int, Any]:
        assert (method, path) == ("GET", "/images/json")
        self.calls += 1
        if self.listed is not None:
            self.listed()
            await asyncio.sleep(0)  # the event reaches the follower before the answer
            await asyncio.sleep(0)
        if self.gate is not None:
            await self.gate.wait()
        return self.answers[min(self.calls, len(self.answers)) - 1]

    def image_events(self) -> OpenEvents | None:
        return None if self.events is None else self.events.open


@pytest.fixture(autouse=True)
def no_relisting_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listings counted here are the builds' own (listing ahead: its own test)."""
    monkeypatch.setattr(lookups, "RELIST_AFTER", 3600.0)


def _image(ident: str, tag: str, owner: str | None) -> dict[str, Any]:
    return {"Id": ident, "RepoTags": [tag], "Labels": {TENANT_LABEL: owner} if owner else {}}


def _look(tmp_path: Path, engine: Engine) -> Lookups:
    store = OwnershipStore(tmp_path / "state.db")
    return Lookups(store, engine, socket_of=None, daemon_sockets=frozenset())


def _following(tmp_path: Path) -> tuple[Events, Engine, Lookups]:
    """Lookups of an engine with no images whose image events it can follow."""
    events = Events()
    engine = Engine([(200, [])], events)
    return events, engine, _look(tmp_path, engine)


async def _followed(look: Lookups) -> None:
    look._follow_image_events()
    for _ in range(100):
        if look.listing.following:
            return
        await asyncio.sleep(0)
    raise AssertionError("the follower never started")


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_without_followed_events_each_solve_asks_afresh(tmp_path: Path) -> None:
    engine = Engine([(200, [_image("sha256:b1", "theirs:1", "job-b")])])  # no event stream
    look = _look(tmp_path, engine)
    a = Tenant.job("job-a")

    async def run() -> None:
        assert await foreign_images(look, a) == (frozenset({"theirs:1"}), frozenset({"sha256:b1"}))
        await foreign_images(look, a)  # the second Solve of the same `docker build`
        assert engine.calls == 2
        waiting = [asyncio.ensure_future(look.image_list()) for _ in range(3)]
        await asyncio.gather(*waiting)
        assert engine.calls == 5  # not even shared while under way

    asyncio.run(run())


def test_a_listing_is_kept_until_an_image_event_and_harmless_events_keep_it(
    tmp_path: Path,
) -> None:
    first = [_image("sha256:b1", "theirs:1", "job-b")]
    second = [*first, _image("sha256:b2", "new:1", "job-b")]
    events = Events()
    engine = Engine([(200, first), (200, second)], events)
    look = _look(tmp_path, engine)
    a = Tenant.job("job-a")

    async def run() -> None:
        await _followed(look)
        assert await foreign_images(look, a) == (frozenset({"theirs:1"}), frozenset({"sha256:b1"}))
        await foreign_images(look, a)  # the second Solve: nothing changed
        assert engine.calls == 1
        events.send("save")
        events.send("push")
        await _settle()
        await foreign_images(look, a)
        assert engine.calls == 1
        events.send("commit", kind="container")  # dockerd filters these out; a change anyway
        await _settle()
        await foreign_images(look, a)
        assert engine.calls == 2
        events.send("tag")
        await _settle()
        tags, ids = await foreign_images(look, a)  # changed: asked again
        assert engine.calls == 3
        assert ids == {"sha256:b1", "sha256:b2"} and "new:1" in tags
        await foreign_images(look, a)
        assert engine.calls == 3

    asyncio.run(run())


def test_an_event_while_a_listing_is_under_way_keeps_it_from_being_kept(tmp_path: Path) -> None:
    events, engine, look = _following(tmp_path)

    async def run() -> None:
        await _followed(look)
        engine.listed = lambda: events.send("untag")
        await look.image_list()  # answered, but an event came between ask and answer
        engine.listed = None
        await look.image_list()
        assert engine.calls == 2
        await look.image_list()  # this one was kept
        assert engine.calls == 2

    asyncio.run(run())


def test_the_guards_own_changes_drop_the_listing(tmp_path: Path) -> None:
    _events, engine, look = _following(tmp_path)

    async def run() -> None:
        await _followed(look)
        await look.image_list()
        look.images_changed()  # a Solve ended, a commit or build answered
        await look.image_list()
        assert engine.calls == 2

    asyncio.run(run())


def test_an_ended_stream_means_asking_afresh_until_it_is_followed_again(tmp_path: Path) -> None:
    events, engine, look = _following(tmp_path)

    async def run() -> None:
        await _followed(look)
        await look.image_list()
        events.end()  # the daemon restarted
        await _settle()
        assert not look.listing.following
        await look.image_list()
        await look.image_list()
        assert engine.calls == 3
        for _ in range(100):  # reconnected after the first backoff
            if look.listing.following:
                break
            await asyncio.sleep(0.01)
        assert look.listing.following and events.opened == 2
        await look.image_list()
        await look.image_list()
        assert engine.calls == 4
        engine.closed = True  # the gateway stops: the follower ends with the stream
        events.end()
        await _settle()
        assert look._follower is not None and look._follower.done()
        assert not look.listing.following

    asyncio.run(run())


def test_ownership_is_worked_out_afresh_from_a_kept_listing(tmp_path: Path) -> None:
    engine = Engine([(200, [_image("sha256:b1", "theirs:1", "job-b")])], Events())
    look = _look(tmp_path, engine)

    async def run() -> None:
        await _followed(look)
        assert (await foreign_images(look, Tenant.job("job-a")))[1] == {"sha256:b1"}
        assert (await foreign_images(look, Tenant.job("job-b")))[1] == frozenset()
        look.store.add("job-b", "tag", "made:1")  # a tag claimed since the listing
        assert "made:1" in (await foreign_images(look, Tenant.job("job-a")))[0]
        assert engine.calls == 1

    asyncio.run(run())


def test_a_failed_listing_is_refused_to_everyone_waiting_and_never_kept(tmp_path: Path) -> None:
    engine = Engine([(500, None), (200, [])], Events())
    look = _look(tmp_path, engine)

    async def run() -> None:
        await _followed(look)
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
    engine = Engine([(200, [_image("sha256:b1", "theirs:1", "job-b")])], Events())
    look = _look(tmp_path, engine)

    async def run() -> None:
        await _followed(look)
        engine.gate = asyncio.Event()
        first = asyncio.ensure_future(look.image_list())
        second = asyncio.ensure_future(look.image_list())
        await asyncio.sleep(0)
        first.cancel()
        engine.gate.set()
        assert [i["Id"] for i in await second] == ["sha256:b1"]
        assert first.cancelled() and engine.calls == 1

    asyncio.run(run())


def test_a_change_is_listed_again_ahead_of_the_next_build_once_per_burst(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lookups, "RELIST_AFTER", 0.01)
    events, engine, look = _following(tmp_path)

    async def run() -> None:
        await _followed(look)
        await asyncio.sleep(0.05)
        assert engine.calls == 0  # no build asked yet: nothing listed ahead
        await look.image_list()
        assert engine.calls == 1
        events.send("create")
        events.send("tag")
        await asyncio.sleep(0.05)
        assert engine.calls == 2  # one listing for the burst, kept
        await look.image_list()
        assert engine.calls == 2  # the next build finds it
        engine.gate = asyncio.Event()
        events.send("untag")
        await asyncio.sleep(0.05)
        assert engine.calls == 3  # under way ...
        events.send("delete")  # ... and stale
        await asyncio.sleep(0.05)
        assert engine.calls == 3  # one at a time
        engine.gate.set()
        await asyncio.sleep(0.05)
        assert engine.calls == 4  # then again, kept
        engine.gate = None
        await look.image_list()
        assert engine.calls == 4
        monkeypatch.setattr(lookups, "RELIST_WHILE_BUILDING", 0.0)
        events.send("tag")  # no build lately: nothing listed ahead
        await asyncio.sleep(0.05)
        assert engine.calls == 4

    asyncio.run(run())
