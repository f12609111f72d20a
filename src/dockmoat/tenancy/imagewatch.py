"""The engine's image listing, kept for as long as the engine says no image changed.

A BuildKit build's source policy is decided on the engine's full image listing
(`GET /images/json`, routes/build.py), which takes 0.2-0.7 s on an engine with a
thousand images, and buildx sends two Solves per `docker build`. A listing is kept
and reused only while the engine's image events (`GET /events`, `type=image`) are
followed: any image event (pull, tag, untag, delete, import, load, create, prune,
and any action a later engine adds) drops it; only `save` and `push`, which change
no image, do not. What changes images without an event on some engines (a BuildKit
export on 20.10, an untagged commit or classic build) drops it too, from the guard:
a Solve it forwarded ended, a commit or build it forwarded answered (`changed`).

Fail closed: while the events are not followed (before the stream's head, after it
ended, while the daemon restarts) nothing is kept and each caller asks afresh. A
listing is stored only if no event came between its request and its answer (the
generation it was asked in is still the current one). The listing is then exact up
to the engine's event delivery (docs/tenancy.md).

`ListingCache` and `EventLines` are sans-IO; `follow_image_events` is the loop that
reads the stream (over the gateway's own upstream connections, tenancy/engine.py).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final, Generic, Protocol, TypeVar

from dockmoat.errors import UpstreamError

log = logging.getLogger("dockmoat.tenancy")

T = TypeVar("T")

#: Image actions that change no image (and so nothing `foreign_images` reads).
HARMLESS_ACTIONS: Final = frozenset({"save", "push"})
#: The longest event line read whole (an event carries the image's labels); a longer
#: one counts as a change and is skipped to its end.
MAX_LINE: Final = 1 << 20
#: Events asked from this many seconds before the stream is opened (dockerd keeps
#: the last events in memory and replays them): dockerd sends the answer's head
#: before it subscribes, so an event in between would be missed without them.
REPLAY_S: Final = 5
BACKOFF_FIRST: Final = 0.1
BACKOFF_MAX: Final = 5.0


class ListingCache(Generic[T]):
    """A value kept while it is known current: sans-IO, with a generation counter.

    Every change (an event, the guard's own `changed`, the follower starting or
    stopping) starts a new generation and drops what is kept; `store` keeps a value
    only if it was asked for in the current generation and events are followed.
    `on_change` is told of each change while followed (to list again ahead of the
    next build, tenancy/lookups.py)."""

    def __init__(self) -> None:
        self.generation = 0
        self.following = False
        self._kept: T | None = None
        self.on_change: Callable[[], None] | None = None

    def cached(self) -> T | None:
        return self._kept if self.following else None

    def store(self, asked_in: int, value: T) -> bool:
        if not self.following or asked_in != self.generation:
            return False
        self._kept = value
        return True

    def changed(self) -> None:
        self._new_generation()
        if self.following and self.on_change is not None:
            self.on_change()

    def follow_started(self) -> None:
        # What was listed before the stream was followed may have missed an event.
        self._new_generation()
        self.following = True
        if self.on_change is not None:
            self.on_change()

    def follow_ended(self) -> None:
        self._new_generation()
        self.following = False

    def _new_generation(self) -> None:
        self.generation += 1
        self._kept = None


def changes_images(line: bytes) -> bool:
    """Whether one event line may have changed images: anything but a readable
    image `save` or `push` (an unreadable line counts as a change)."""
    try:
        event = json.loads(line)
    except ValueError:
        return True
    if not isinstance(event, dict):
        return True
    action = event.get("Action", event.get("status"))
    return not (event.get("Type", "image") == "image" and action in HARMLESS_ACTIONS)


class EventLines:
    """An events stream's bytes, split into lines (dockerd writes one JSON object per
    line), bounded: `feed` says whether any line completed by these bytes may have
    changed images."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._max = max_line
        self._partial = bytearray()
        self._skipping = False  # inside a line longer than `max_line`

    def feed(self, data: bytes) -> bool:
        changed = False
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            if self._skipping:
                self._skipping = False
            else:
                line = bytes(self._partial) + data[start:end]
                if line.strip():
                    changed = changed or changes_images(line)
            self._partial.clear()
            start = end + 1
        if not self._skipping:
            self._partial += data[start:]
            if len(self._partial) > self._max:
                # Too long to read: a change, whatever it says.
                self._partial.clear()
                self._skipping = True
                changed = True
        return changed


class Streamed(Protocol):
    """A streamed answer (dockmoat.gateway.upstream.StreamedAnswer)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> dict[str, str]: ...

    @property
    def chunks(self) -> AsyncIterator[bytes]: ...


#: Opens the events stream from a `since` (Unix seconds).
OpenEvents = Callable[[int], AbstractAsyncContextManager[Streamed]]


def daemon_clock_skew(date: str | None, now: float) -> float | None:
    """The daemon's clock minus ours, from its answer's `Date` header (None if absent)."""
    if not date:
        return None
    try:
        return email.utils.parsedate_to_datetime(date).timestamp() - now
    except (TypeError, ValueError):
        return None


class ImageEventFollower:
    """Follows the engine's image events for a `ListingCache`: one stream at a time,
    reconnected with backoff, each state change logged once; never raises."""

    def __init__(
        self, cache: ListingCache[T], open_events: OpenEvents, stopped: Callable[[], bool]
    ) -> None:
        self.cache = cache
        self._open = open_events
        self._stopped = stopped
        self._skew = 0.0  # the daemon's clock minus ours, as last seen
        self._said = ""  # the last state logged

    def _say(self, state: str, level: int, message: str, *args: object) -> None:
        if state != self._said:
            self._said = state
            log.log(level, message, *args)

    async def run(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._stopped():
            try:
                if await self._follow_once():
                    backoff = BACKOFF_FIRST  # it was followed: a quick reconnect first
                    self._say("ended", logging.INFO, "tenancy: the engine's image "
                              "events ended; image listings are asked afresh until followed "
                              "again")  # fmt: skip
            except asyncio.CancelledError:
                self.cache.follow_ended()
                raise
            except Exception as error:  # noqa: BLE001 - any failure: not followed, retried
                if not self._stopped():
                    self._say("failed", logging.WARNING, "tenancy: cannot follow the "
                              "engine's image events (%s); image listings are asked afresh "
                              "until followed again", error)  # fmt: skip
            self.cache.follow_ended()
            if self._stopped():
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        self.cache.follow_ended()

    async def _follow_once(self) -> bool:
        """One stream, until it ends; True if it was followed."""
        since = int(time.time() + self._skew) - REPLAY_S
        async with self._open(since) as answer:
            if answer.status != 200:
                raise UpstreamError(f"the daemon answered /events with HTTP {answer.status}")
            skew = daemon_clock_skew(answer.headers.get("date"), time.time())
            if skew is not None:
                self._skew = skew
                if int(time.time() + skew) < since:
                    # Behind our `since` by more than REPLAY_S: the events between its
                    # head and its subscription would not be replayed. Again, with its clock.
                    raise UpstreamError(f"the daemon's clock is {-skew:.0f} s behind ours")
            self.cache.follow_started()
            self._say("following", logging.INFO, "tenancy: following the engine's image "
                      "events; an image listing is reused until one arrives")  # fmt: skip
            lines = EventLines()
            async for data in answer.chunks:
                if lines.feed(data):
                    self.cache.changed()
        return True
