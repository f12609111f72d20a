"""The audit log: its line format (what json.dumps would write) and its writer."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.api.request import ClientIdentity
from dockmoat.gateway import audit
from dockmoat.gateway.audit import AuditEntry, AuditLog, audit_line

FIELDS = (
    "time", "conn", "listener", "tenant", "uid", "pid", "tls_subject", "address", "method",
    "path", "routed_path", "api_version", "route", "decision", "rule", "notes", "status",
    "bytes_in", "bytes_out", "duration_ms",
)  # fmt: skip

text = st.text()
maybe_text = st.none() | text
maybe_int = st.none() | st.integers(min_value=0, max_value=2**31)
clients = st.builds(
    ClientIdentity, listener=text, tenant=maybe_text, uid=maybe_int, pid=maybe_int,
    tls_subject=maybe_text, address=maybe_text,
)  # fmt: skip
entries = st.builds(
    AuditEntry, time=text, conn=st.integers(min_value=0), client=clients, method=maybe_text,
    path=maybe_text, routed_path=maybe_text, api_version=maybe_text, route=maybe_text,
    decision=text, rule=maybe_text, notes=st.tuples() | st.lists(text).map(tuple),
    status=st.integers(0, 999), bytes_in=st.integers(min_value=0),
    bytes_out=st.integers(min_value=0),
    duration_ms=st.floats(min_value=0, max_value=1e9, allow_nan=False),
)  # fmt: skip


def expected(entry: AuditEntry, dropped: int = 0) -> str:
    client = entry.client
    values = {
        "time": entry.time, "conn": entry.conn, "listener": client.listener,
        "tenant": client.tenant, "uid": client.uid, "pid": client.pid,
        "tls_subject": client.tls_subject, "address": client.address, "method": entry.method,
        "path": entry.path, "routed_path": entry.routed_path, "api_version": entry.api_version,
        "route": entry.route, "decision": entry.decision, "rule": entry.rule,
        "notes": list(entry.notes), "status": entry.status, "bytes_in": entry.bytes_in,
        "bytes_out": entry.bytes_out, "duration_ms": round(entry.duration_ms, 3),
    }  # fmt: skip
    if dropped:
        values["audit_dropped_before"] = dropped
    return json.dumps(values, separators=(",", ":")) + "\n"


@given(entries, st.integers(min_value=0, max_value=10**6))
def test_a_line_reads_as_what_json_dumps_writes(entry: AuditEntry, dropped: int) -> None:
    line = audit_line(entry, dropped)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line) == json.loads(expected(entry, dropped))
    assert list(json.loads(line))[: len(FIELDS)] == list(FIELDS)


def entry(n: int) -> AuditEntry:
    client = ClientIdentity(listener="unix:///x.sock", uid=0, pid=1)
    return AuditEntry("T", n, client, "GET", f"/{n}", f"/{n}", None, "system.ping",
                      "allow", "r", (), 200, 1, 2, 0.5)  # fmt: skip


def read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def full_disk(log: AuditLog, monkeypatch: pytest.MonkeyPatch, full: bool) -> list[bool]:
    """Make the log's writes fail with ENOSPC while the returned switch is on."""
    original = log._write
    switch = [full]

    def write(text: str) -> None:
        if switch[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(text)

    monkeypatch.setattr(log, "_write", write)
    return switch


async def batches(log: AuditLog, count: int, size: int, first: int = 0) -> None:
    """`count` batches of `size` entries (conns from `first` on), each written alone."""
    for batch in range(count):
        for n in range(size):
            log.record(entry(first + batch * size + n))
        await asyncio.sleep(audit.BATCH_WINDOW * 2)


def test_an_entry_after_a_quiet_spell_is_written_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = AuditLog(str(tmp_path / "a.log"))
        log.open()
        log.record(entry(1))
        for _ in range(50):  # far less than BATCH_WINDOW
            await asyncio.sleep(0.001)
            if (tmp_path / "a.log").read_text():
                break
        assert [e["conn"] for e in read(tmp_path / "a.log")] == [1]
        await log.close()

    asyncio.run(scenario())


def test_a_burst_is_written_in_few_batches_and_close_writes_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []

    async def scenario() -> None:
        log = AuditLog(str(tmp_path / "a.log"))
        original = log._write
        monkeypatch.setattr(log, "_write", lambda text: (writes.append(text.count("\n")),
                                                          original(text)))  # fmt: skip
        log.open()
        for n in range(2000):
            log.record(entry(n))
            if n % 100 == 0:
                await asyncio.sleep(0)  # the loop runs between requests
        await log.close()

    asyncio.run(scenario())
    assert [e["conn"] for e in read(tmp_path / "a.log")] == list(range(2000))
    assert sum(writes) == 2000 and len(writes) <= 3


def test_entries_past_the_limit_are_counted_on_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """And on /metrics' counts, said once each way in the log (issue 23)."""
    monkeypatch.setattr(audit, "QUEUE_LIMIT", 5)

    async def scenario() -> AuditLog:
        log = AuditLog(str(tmp_path / "a.log"))
        log.open()
        for n in range(8):  # the writer has not run yet: 5 kept, 3 dropped
            log.record(entry(n))
        assert log.failing and log.dropped_total == 3 and log.queued == 5
        await asyncio.sleep(0.2)
        assert not log.failing
        log.record(entry(8))
        await log.close()
        return log

    with caplog.at_level("INFO", logger="dockmoat.gateway"):
        log = asyncio.run(scenario())
    lines = read(tmp_path / "a.log")
    assert [e["conn"] for e in lines] == [0, 1, 2, 3, 4, 8]
    assert [e.get("audit_dropped_before") for e in lines] == [None] * 5 + [3]
    assert (log.dropped_total, log.write_errors) == (3, 0)
    said = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in said] == ["ERROR", "WARNING"], said
    assert "5 entries wait for a disk that does not keep up" in said[0][1]
    assert "3 entries were not written" in said[1][1]


def test_a_failing_write_is_logged_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        log = AuditLog(str(tmp_path / "a.log"))
        original = log._write
        failures = [OSError(28, "No space left on device")]

        def write(text: str) -> None:
            if failures:
                raise failures.pop()
            original(text)

        monkeypatch.setattr(log, "_write", write)
        log.open()
        log.record(entry(1))
        log.record(entry(2))
        await asyncio.sleep(0.2)
        log.record(entry(3))
        await log.close()

    asyncio.run(scenario())
    assert [(e["conn"], e["audit_dropped_before"]) for e in read(tmp_path / "a.log")] == [(3, 2)]
    assert "writing 2 audit entries failed" in caplog.text


def test_no_target_records_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = AuditLog(None)
        log.open()
        log.record(entry(1))
        assert not log.enabled
        await log.close()

    asyncio.run(scenario())


def test_entries_recorded_while_closing_are_written(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = AuditLog(str(tmp_path / "a.log"))
        log.open()
        log.record(entry(1))
        closing = asyncio.create_task(log.close())
        await asyncio.sleep(0)
        log.record(entry(2))  # a request that ended during the drain
        await closing

    asyncio.run(scenario())
    assert [e["conn"] for e in read(tmp_path / "a.log")] == [1, 2]


def test_a_full_disk_leaves_no_torn_line_and_no_entry_both_written_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the soak suite (audit log on a full disk): the file object's buffer kept
    what the disk refused and wrote it later, so entries counted as dropped were in the
    file too; a short write left half a line."""
    real_write = os.write
    full = [True]

    def disk_write(fd: int, data: bytes | memoryview) -> int:
        if full[0] and os.readlink(f"/proc/self/fd/{fd}") == str(tmp_path / "a.log"):
            if len(data) > 10:
                return real_write(fd, bytes(data[:10]))  # the last free blocks: half a line
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    async def scenario() -> None:
        log = AuditLog(str(tmp_path / "a.log"))
        log.open()
        log.record(entry(0))
        await asyncio.sleep(0.2)  # written before the disk fills
        monkeypatch.setattr(audit.os, "write", disk_write)
        log.record(entry(1))
        log.record(entry(2))
        await asyncio.sleep(0.2)
        full[0] = False  # room again
        log.record(entry(3))
        await log.close()

    asyncio.run(scenario())
    lines = read(tmp_path / "a.log")  # every line whole JSON
    assert [(e["conn"], e.get("audit_dropped_before")) for e in lines] == [(0, None), (3, 2)]


def test_a_long_full_disk_counts_the_whole_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the soak suite: the count of a failed batch rode on the next entry, and
    when that entry's batch failed too the count went with it, so after a long full
    disk `audit_dropped_before` said only the last batches (58 of 2,734 lost entries)."""

    async def scenario() -> None:
        log = AuditLog(str(tmp_path / "a.log"))
        full = full_disk(log, monkeypatch, True)
        log.open()
        await batches(log, 4, 3)  # four batches fail, each carrying the count before it
        full[0] = False
        log.record(entry(99))
        await log.close()

    asyncio.run(scenario())
    assert [(e["conn"], e.get("audit_dropped_before")) for e in read(tmp_path / "a.log")] == [
        (99, 12)
    ]


# The operator is told (issue 23): /metrics counts, and one log line per state change.


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


def test_a_disk_that_is_full_for_good_is_one_error_line_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/dev/full: every write fails with ENOSPC. Each failed batch is counted, the log
    says so once (not once per batch or request), and serve's stop says what is lost."""

    async def scenario() -> AuditLog:
        log = AuditLog("/dev/full")
        log.open()
        await batches(log, 4, 3)
        assert log.failing
        assert (log.dropped_total, log.write_errors) == (12, 4)
        await log.close()
        return log

    with caplog.at_level("INFO", logger="dockmoat.gateway"):
        log = asyncio.run(scenario())
    assert log.failing and log.queued == 0
    lines = errors(caplog)
    assert len(lines) == 2, lines
    assert "the audit log /dev/full is losing entries" in lines[0]
    assert "No space left on device" in lines[0] and "dockmoat_audit_dropped_total" in lines[0]
    assert "still failing: 12 entries not written" in lines[1]


def test_a_disk_full_then_freed_says_so_once_each_way_with_the_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> AuditLog:
        log = AuditLog(str(tmp_path / "a.log"))
        full = full_disk(log, monkeypatch, False)
        log.open()
        await batches(log, 1, 1)
        assert not log.failing
        full[0] = True
        await batches(log, 3, 2, first=10)
        assert log.failing and (log.dropped_total, log.write_errors) == (6, 3)
        full[0] = False
        log.record(entry(99))
        await asyncio.sleep(audit.BATCH_WINDOW * 2)
        assert not log.failing
        await log.close()
        return log

    with caplog.at_level("INFO", logger="dockmoat.gateway"):
        log = asyncio.run(scenario())
    assert (log.dropped_total, log.write_errors) == (6, 3)  # totals: never reset
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == ["ERROR", "WARNING"], lines
    assert "writing 2 audit entries failed" in lines[0][1]
    assert "is written again after" in lines[1][1]
    assert "6 entries were not written" in lines[1][1]
    written = [(e["conn"], e.get("audit_dropped_before")) for e in read(tmp_path / "a.log")]
    assert written == [(0, None), (99, 6)]


def test_another_error_while_failing_is_said_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        log = AuditLog(str(tmp_path / "a.log"))
        failures = [OSError(errno.EIO, "Input/output error")] + [
            OSError(errno.ENOSPC, "No space left on device")
        ] * 3

        def write(text: str) -> None:
            raise failures.pop()

        monkeypatch.setattr(log, "_write", write)
        log.open()
        await batches(log, 4, 1)
        await log.close()

    asyncio.run(scenario())
    lines = errors(caplog)
    assert len(lines) == 3, lines  # ENOSPC (start), EIO (now), still failing at stop
    assert "No space left" in lines[0]
    assert "still loses entries, now: writing 1 audit entries failed" in lines[1]
    assert "Input/output error" in lines[1]
