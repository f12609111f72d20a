"""A state database that cannot be written (read-only or full: the soak suite's faults)
is a StateError: one line, 503 `state-unwritable` at the gateway, 503 at `/ready`;
reads go on, and writes work again once it can be written."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from dockmoat.api.request import ApiRequest, ClientIdentity
from dockmoat.errors import StateError
from dockmoat.gateway import pipeline
from dockmoat.gateway.sansio.http import RequestHead, RequestReader
from dockmoat.gateway.stages import Context, PermissivePolicy, Stage
from dockmoat.policy.decision import Decision, Deny
from dockmoat.tenancy.store import JobRecord, OwnershipStore

CLIENT = ClientIdentity(listener="unix:///j.sock", tenant="a")


def _store(tmp_path: Path) -> OwnershipStore:
    store = OwnershipStore(tmp_path / "state.db")
    store.add_job(JobRecord("a", 1.0, None, None, None, "/run/a.sock"))
    store.add("a", "container", "c1")
    return store


def test_a_read_only_database_is_a_state_error_and_reads_go_on(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store._db.execute("PRAGMA query_only = ON")  # what a read-only remount does to writes
    with pytest.raises(StateError, match=r"state\.db cannot be written: attempt to write"):
        store.add("a", "container", "c2")
    assert store.owned("a", "container") == ["c1"]  # reads go on
    assert store.writable()[0] is False
    assert "cannot be written" in store.writable()[1]
    store._db.execute("PRAGMA query_only = OFF")  # repaired
    assert store.writable() == (True, "writable")
    store.add("a", "container", "c2")
    assert store.owned("a", "container") == ["c1", "c2"]


def test_a_full_database_is_a_state_error(tmp_path: Path) -> None:
    store = _store(tmp_path)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # no page more: "disk is full"
    with pytest.raises(StateError, match="full"):
        for index in range(10_000):
            store.add("a", "container", f"{index:064d}")
    assert not store._db.in_transaction  # rolled back, the connection usable
    assert store.counts("a")["container"] >= 1


def test_a_constraint_is_not_a_state_error(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(sqlite3.IntegrityError):
        store.add_job(JobRecord("a", 2.0, None, None, None, "/run/a.sock"))


class RecordingStage(Stage):
    """A stage whose ownership record fails as the store's does on a read-only disk."""

    async def on_request(self, ctx: Context, request: ApiRequest) -> Decision:
        raise StateError("the state database /var/lib/dockmoat/state.db cannot be written: x")


class NoUpstream:
    async def request(self, *args: object, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
        raise AssertionError("no look-up expected")


def test_the_gateway_answers_503_state_unwritable(caplog: pytest.LogCaptureFixture) -> None:
    raw = b"POST /v1.47/volumes/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}"
    reader = RequestReader()
    head = next(e for e in reader.feed(raw) if isinstance(e, RequestHead))
    request = pipeline.plan(head, CLIENT, PermissivePolicy()).request
    ctx = Context(CLIENT, NoUpstream())
    outcome = asyncio.run(pipeline.decide(request, PermissivePolicy(), RecordingStage(), ctx,
                                          form=False))  # fmt: skip
    assert isinstance(outcome.decision, Deny)
    assert outcome.decision.status == 503
    assert outcome.decision.rule == pipeline.STATE_UNWRITABLE
    assert "/var/lib/dockmoat/state.db cannot be written" in outcome.decision.message
    assert outcome.target == ""  # nothing forwarded
    # One line, no traceback.
    assert [r.exc_info for r in caplog.records if "state.db" in r.getMessage()] == [None]
