"""What tenancy's route handlers (routes/) work with: the engine and the ownership store.

Look-ups go to the engine (labels are the first source of truth for
containers, networks and volumes) and to the ownership store (image tags,
exec ids). Follow-up work that must not hold up an answer (releasing a failed
request's tag claims, recording a tag's image, setting back a tag a load
moved) runs as tracked background tasks here, a few at a time where it writes.
The stage (stage.py) owns one `Lookups` and hands it to every handler, which
keeps no state of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from dockmoat.policy import hostpaths
from dockmoat.policy.decision import Allow, Decision, Deny
from dockmoat.tenancy import present
from dockmoat.tenancy.engine import EngineApi
from dockmoat.tenancy.imagewatch import ImageEventFollower, ListingCache, OpenEvents
from dockmoat.tenancy.model import (
    TENANT_LABEL,
    ContainerFact,
    ImageFacts,
    NetworkFact,
    Owner,
    Tenant,
    looks_like_image_id,
    normalize_tag,
)
from dockmoat.tenancy.store import OwnershipStore

TAG_RULE = "tenancy.image-tag"
_RESTORES_AT_ONCE = 4
#: Seconds after a build last asked for the image listing during which a change makes
#: it be listed again at once, ahead of the next build (off its critical path): the
#: listing costs the engine 0.2-0.7 s with a thousand images, not worth it while no
#: builds come.
RELIST_WHILE_BUILDING = 600.0
#: A burst of image events (a build's create and tag, an rmi's untag and delete) is
#: listed once, this many seconds after its first event.
RELIST_AFTER = 0.05
log = logging.getLogger("dockmoat.tenancy")


@runtime_checkable
class FollowsEvents(Protocol):
    """An engine whose image events can be followed (tenancy.engine.PooledEngine)."""

    @property
    def closed(self) -> bool: ...

    def image_events(self) -> OpenEvents | None: ...


@dataclass(frozen=True)
class LoadSnapshot:
    """The engine's images just before a job's `docker load`."""

    tags: dict[str, str]  # normalized tag -> image id
    ids: frozenset[str]


def resolved_path(path: str) -> str:
    """A host path as a bind source resolves (symbolic links followed), or ""."""
    try:
        return hostpaths.resolve(path)
    except OSError:
        return ""


class Lookups:
    """The engine, the store and the stage's settings, as route handlers use them."""

    def __init__(
        self,
        store: OwnershipStore,
        engine: EngineApi | None,
        *,
        socket_of: Callable[[str], str | None] | None,
        daemon_sockets: frozenset[str],
    ) -> None:
        self.store = store
        # Inside the gateway, look-ups use its pooled upstream (known at the first request).
        self.engine_or_none = engine
        # A job container that binds the Docker socket gets its job's socket instead.
        self.socket_of = socket_of
        self.daemon_sockets = daemon_sockets
        # Tags (-> image id) and image ids present before each `docker load` (keyed
        # by request), bounded.
        # Restores of tags a load moved and releases of a failed request's claims,
        # kept referenced; restores a few at a time.
        self._tasks: set[asyncio.Task[None]] = set()
        self._restoring: asyncio.Semaphore | None = None  # made in the serving loop
        # The engine's image listing, kept while the engine's image events say nothing
        # changed (imagewatch.py); the one under way, with the generation it was asked in.
        self.listing: ListingCache[list[dict[str, Any]]] = ListingCache()
        self.listing.on_change = self._relist_soon
        self._listing_asked: tuple[int, asyncio.Future[list[dict[str, Any]]]] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._wanted_at: float | None = None  # when a build last asked for the listing
        self._relist: asyncio.TimerHandle | None = None

    @property
    def engine(self) -> EngineApi:
        if self.engine_or_none is None:
            raise RuntimeError("the tenancy stage has no engine yet")
        return self.engine_or_none

    # --- containers, networks, volumes: by the engine's labels -------------------

    async def owned_containers(self, tenant: Tenant) -> list[ContainerFact]:
        status, answer = await self.engine.call(
            "GET",
            "/containers/json",
            {"all": "1", "filters": {"label": [f"{TENANT_LABEL}={tenant.name}"]}},
        )
        if status != 200 or not isinstance(answer, list):
            raise RuntimeError(f"cannot list the containers of {tenant.name}: {status}")
        return [ContainerFact.from_list_entry(e) for e in answer if isinstance(e, dict)]

    async def owned_networks(self, tenant: Tenant) -> list[NetworkFact]:
        status, answer = await self.engine.call(
            "GET", "/networks", {"filters": {"label": [f"{TENANT_LABEL}={tenant.name}"]}}
        )
        if status != 200 or not isinstance(answer, list):
            raise RuntimeError(f"cannot list the networks of {tenant.name}: {status}")
        return [NetworkFact.from_list_entry(e) for e in answer if isinstance(e, dict)]

    async def volume(self, tenant: Tenant, ref: str) -> str | None:
        """The engine name of the tenant's volume `ref`, or None."""
        recorded = set(self.store.owned(tenant.name, "volume"))
        for candidate in (tenant.namespace.engine_name(ref), ref):
            status, answer = await self.engine.call("GET", f"/volumes/{candidate}")
            if (
                status == 200
                and isinstance(answer, dict)
                and present.volume_mine(answer, tenant, frozenset(recorded))
            ):
                return str(answer.get("Name", candidate))
        return None

    # --- images: by the store's records ------------------------------------------

    async def image_list(self) -> list[dict[str, Any]]:
        """The engine's `GET /images/json` (read-only), kept while the engine's image
        events are followed and none came since it was asked for (imagewatch.py);
        callers while one is under way in the current generation share it (one asked
        ahead after a change, too). Not followed: each caller asks afresh. A failed
        listing is never kept or shared. The listing runs as a task of its own, so a
        caller that goes away cancels nothing."""
        self._wanted_at = asyncio.get_running_loop().time()
        self._follow_image_events()
        kept = self.listing.cached()
        if kept is not None:
            return kept
        listing = self._current_listing()
        if listing is None:
            listing = self._start_listing()
        return await asyncio.shield(listing)

    def _current_listing(self) -> asyncio.Future[list[dict[str, Any]]] | None:
        """The listing under way (or just done) asked in this generation, while followed."""
        if not self.listing.following or self._listing_asked is None:
            return None
        asked_in, listing = self._listing_asked
        failed = listing.done() and (listing.cancelled() or listing.exception() is not None)
        return listing if asked_in == self.listing.generation and not failed else None

    def _start_listing(self) -> asyncio.Future[list[dict[str, Any]]]:
        generation = self.listing.generation
        listing = asyncio.ensure_future(self._list_images())

        def keep(done: asyncio.Future[list[dict[str, Any]]]) -> None:
            if not done.cancelled() and done.exception() is None:
                self.listing.store(generation, done.result())  # if no change came since

        listing.add_done_callback(keep)
        self._listing_asked = (generation, listing)
        return listing

    def _relist_soon(self) -> None:
        """A change while followed: list again shortly (once per burst of events), if a
        build asked recently, so that the next build finds the listing made or under way."""
        if self._relist is not None or self._wanted_at is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - self._wanted_at > RELIST_WHILE_BUILDING:
            return
        self._relist = loop.call_later(RELIST_AFTER, self._relist_now)

    def _relist_now(self) -> None:
        self._relist = None
        if self.listing.cached() is not None or self._current_listing() is not None:
            return
        if not self.listing.following or self.engine_or_none is None:
            return
        if self._listing_asked is not None and not self._listing_asked[1].done():
            # One listing at a time from here: again once the stale one is answered.
            self._listing_asked[1].add_done_callback(lambda _done: self._relist_soon())
            return
        self._start_listing()  # a failure is the next build's to see (it asks again)

    def images_changed(self) -> None:
        """The guard forwarded what may have changed images without an image event on
        some engines (a BuildKit export, a commit, a classic build): listings go."""
        self.listing.changed()

    def _follow_image_events(self) -> None:
        """Start following the engine's image events (once; one stream per engine)."""
        if self._follower is not None or self.engine_or_none is None:
            return
        engine = self.engine_or_none
        if not isinstance(engine, FollowsEvents):
            return
        open_events = engine.image_events()
        if open_events is None:
            return
        follows: FollowsEvents = engine
        follower = ImageEventFollower(self.listing, open_events, lambda: follows.closed)
        self._follower = asyncio.get_running_loop().create_task(follower.run())

    async def _list_images(self) -> list[dict[str, Any]]:
        status, answer = await self.engine.call("GET", "/images/json")
        if status != 200 or not isinstance(answer, list):
            raise RuntimeError(f"cannot list images: {status}")
        return [image for image in answer if isinstance(image, dict)]

    def image_facts(self, tenant: Tenant) -> ImageFacts:
        return ImageFacts(
            tenant=tenant.name,
            id_owners={k: frozenset(v) for k, v in self.store.all_owned("image").items()},
            tag_owners={k: frozenset(v) for k, v in self.store.all_owned("tag").items()},
        )

    async def image(self, ref: str) -> dict[str, Any] | None:
        status, answer = await self.engine.call("GET", f"/images/{ref}/json")
        return answer if status == 200 and isinstance(answer, dict) else None

    async def image_visible(self, tenant: Tenant, ref: str) -> tuple[bool, dict[str, Any] | None]:
        """(visible?, inspect) of an image reference.

        A missing image counts as visible: dockerd answers its own 404."""
        image = await self.image(ref)
        if image is None:
            return True, None
        facts = self.image_facts(tenant)
        if not looks_like_image_id(ref) and not facts.tag_visible(normalize_tag(ref)):
            return False, image
        return facts.image_owner(image) is not Owner.FOREIGN, image

    async def claim_tag(self, tenant: Tenant, tag: str) -> Decision:
        """A tag the tenant wants to set (build, tag, commit, pull): free or its own."""
        tag = normalize_tag(tag)
        facts = self.image_facts(tenant)
        if facts.tag_mine(tag):
            return Allow()
        if await self.image(tag) is not None or facts.tag_owners.get(tag):
            return Deny(
                TAG_RULE,
                f"dockmoat: {TAG_RULE}: the tag {tag} is in use outside job {tenant.name} "
                "(shared images and other jobs' tags cannot be retagged). Choose another name.",
            )
        self.store.add(tenant.name, "tag", tag)
        return Allow()

    async def release_unbuilt(self, tenant: Tenant, tags: list[str]) -> None:
        """Claims on tags no image carries go (the request that made them failed)."""
        for tag in tags:
            if await self.image(tag) is None:
                self.store.discard(tenant.name, "tag", tag)
                log.info("tenancy: job %s's request failed; released its claim on %s",
                         tenant.name, tag)  # fmt: skip

    # --- `docker load`: tags it moved, set back ------------------------------------

    async def _restore_tag(self, tenant: Tenant, tag: str, before: LoadSnapshot) -> None:
        """Set a tag a job's load moved back to the image it named before the load.

        The tags are inside the tarball, so the load cannot be refused beforehand;
        between dockerd's retag and this the tag names the job's image (a few
        milliseconds; docs/tenancy.md, known limits). The loaded image becomes
        the job's unless it existed before.
        """
        previous = before.tags[tag]
        image = await self.image(tag)
        loaded = str(image.get("Id")) if image is not None else None
        if loaded == previous:
            return  # the same image loaded again (a save/load cache): nothing moved
        repo, _, name = tag.rpartition(":")
        status, _ = await self.engine.call(
            "POST", f"/images/{previous}/tag", {"repo": repo, "tag": name}
        )
        if status >= 300:
            log.error("tenancy: could not set %s back to %s after a load by job %s "
                      "(HTTP %d)", tag, previous[:19], tenant.name, status)  # fmt: skip
            return
        if loaded is not None and loaded not in before.ids:
            self.store.add(tenant.name, "image", loaded)
        log.warning("tenancy: a load by job %s retagged %s, which is in use outside the "
                    "job; set back to %s", tenant.name, tag, previous[:19])  # fmt: skip

    # --- follow-ups, off the answer's path ----------------------------------------

    def spawn_restore(self, tenant: Tenant, tag: str, before: LoadSnapshot) -> None:
        if self._restoring is None:
            self._restoring = asyncio.Semaphore(_RESTORES_AT_ONCE)
        restoring = self._restoring

        async def restore() -> None:
            async with restoring:
                await self._restore_tag(tenant, tag, before)

        self._spawn_tracked(restore(), f"restoring {tag} after a load by job {tenant.name}")

    def release_later(self, tenant: Tenant, tags: list[str]) -> None:
        """A failed request's claims go (where no image carries them) once looked up."""
        if tags:
            self._spawn_tracked(
                self.release_unbuilt(tenant, tags),
                f"releasing {', '.join(tags)[:200]} of job {tenant.name}",
            )

    def record_tagged(self, tenant: Tenant, tag: str) -> None:
        """`tagged_now` in the background (an answer is not held for it)."""
        self._spawn_tracked(self.tagged_now(tenant, tag), f"recording {tag} of job {tenant.name}")

    async def tagged_now(self, tenant: Tenant, tag: str) -> None:
        """Remember which image a job's tag was made on (its close untags it only while
        it still names that image, or one the job made)."""
        image = await self.image(tag)
        if image is not None and self.image_facts(tenant).tag_mine(tag):
            self.store.add(tenant.name, "tagged", f"{tag}={image.get('Id')}")

    def _spawn_tracked(self, work: Coroutine[Any, Any, None], what: str) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("tenancy: %s failed", what)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
