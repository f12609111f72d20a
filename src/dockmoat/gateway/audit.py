"""The audit log: one JSON line per request, written off the relay's path.

A request leaves an `AuditEntry`, formatted at once into its line (a string:
nothing the cyclic GC walks while it waits) in a bounded in-memory list; a
background task writes the lines in batches from a worker thread, so a slow disk
never stalls a request. If the list is full (the disk cannot keep up), entries
are counted as dropped and the count is written with the next entry that fits,
so a gap is never silent.

A full or failing disk does not stop requests (the documented choice: go on and
count). The operator is told three ways: the count in the file (above, once there is
room again), serve's `/metrics` (`dockmoat_audit_dropped_total`,
`dockmoat_audit_write_errors_total`, `dockmoat_audit_failing`: counted here, read by
gateway/metrics.py at scrape time), and one log line when the log starts failing and
one when it is written again, with how many entries the gap holds (not one per
request or per failed batch).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from functools import lru_cache
from json.encoder import encode_basestring_ascii as _json_string
from pathlib import Path
from typing import NamedTuple, TextIO

from dockmoat.api.memo import LONGEST
from dockmoat.api.request import ClientIdentity
from dockmoat.errors import ConfigError

log = logging.getLogger("dockmoat.gateway")

QUEUE_LIMIT = 10_000
# At most one write per BATCH_WINDOW: an entry after a quiet spell is written at
# once, and under load entries gather for up to this long and go in one batch.
# A write is a hop to a worker thread and back, which in the serving process cost
# about as much CPU as relaying a small request; batched, it costs a fraction
# of a microsecond per entry. It is also the longest an entry waits in memory.
BATCH_WINDOW = 0.05


class AuditEntry(NamedTuple):
    """One request's audit entry (the fields of docs/serve.md, "The audit log").

    Only small values, never the request or its body: a stalled disk holds at
    most QUEUE_LIMIT of these.
    """

    time: str
    conn: int
    client: ClientIdentity
    method: str | None
    path: str | None
    routed_path: str | None
    api_version: str | None
    route: str | None
    decision: str
    rule: str | None
    notes: tuple[str, ...]
    status: int
    bytes_in: int
    bytes_out: int
    duration_ms: float


def audit_line(entry: AuditEntry, dropped_before: int = 0) -> str:
    """The entry as one JSON object and a newline.

    Formatted directly rather than through a dict and `json.dumps` (this runs for
    every request): strings are escaped by the C escaper `json.dumps` itself uses,
    and the line parses to what `json.dumps` of the same fields would, in the same
    order. The duration has three decimals, written as `.3f` (the same number as
    `round(duration, 3)`).
    """
    gap = f',"audit_dropped_before":{dropped_before}' if dropped_before else ""
    version = entry.api_version
    # Memoised for short versions only (see api/memo.py), checked inline: per request.
    verdict_fields = (
        _verdict_memo if version is None or len(version) <= LONGEST else _verdict_fields
    )
    method, verdict = verdict_fields(entry.method, entry.route, entry.decision, entry.rule,
                                     version)  # fmt: skip
    path, routed, notes = entry.path, entry.routed_path, entry.notes
    return (
        f'{{"time":{_json_string(entry.time)},"conn":{entry.conn},'
        f"{_client_fields(entry.client)},{method}"
        f'"path":{"null" if path is None else _json_string(path)},'
        f'"routed_path":{"null" if routed is None else _json_string(routed)},'
        f"{verdict}{','.join(map(_json_string, notes)) if notes else ''}],"
        f'"status":{entry.status},"bytes_in":{entry.bytes_in},"bytes_out":{entry.bytes_out},'
        f'"duration_ms":{entry.duration_ms:.3f}{gap}}}\n'
    )


def _verdict_fields(
    method: str | None, route: str | None, decision: str, rule: str | None, version: str | None
) -> tuple[str, str]:
    """The fields of an entry that come from small sets (methods, routes, rule ids, API
    versions), formatted once per combination (`_verdict_memo`): (the method field, the
    fields from api_version to the opening of notes). The API version is the one a
    client can make long: `audit_line` memoises only short ones."""
    return (
        f'"method":{_text(method)},',
        f'"api_version":{_text(version)},"route":{_text(route)},"decision":{_text(decision)},'
        f'"rule":{_text(rule)},"notes":[',
    )


_verdict_memo = lru_cache(maxsize=1024)(_verdict_fields)


def _text(value: str | None) -> str:
    return "null" if value is None else _json_string(value)


def _number(value: int | None) -> str:
    return "null" if value is None else str(int(value))


@lru_cache(maxsize=4096)
def _client_fields(client: ClientIdentity) -> str:
    """The client's part of an entry: the same for every request of a connection."""
    return (
        f'"listener":{_text(client.listener)},"tenant":{_text(client.tenant)},'
        f'"uid":{_number(client.uid)},"pid":{_number(client.pid)},'
        f'"tls_subject":{_text(client.tls_subject)},"address":{_text(client.address)}'
    )


def append_whole(fd: int, data: bytes) -> None:
    """Append a batch of lines whole or not at all. A file object's buffer would keep
    what a full disk refused and write it once there is room again, after it had been
    counted as dropped (the soak suite saw `audit_dropped_before` count entries that
    were in the file), and a short write would leave a torn line: so the batch goes
    with `os.write` (the file is opened for appending), and a failure part way cuts
    the file back to where the batch began before it is reported."""
    start = os.fstat(fd).st_size
    view = memoryview(data)
    done = 0
    try:
        while done < len(data):
            done += os.write(fd, view[done:])
    except OSError:
        if done:
            os.ftruncate(fd, start)
        raise


class AuditLog:
    def __init__(self, target: str | None) -> None:
        self._target = target
        self._pending: list[str] = []  # lines, formatted
        self._dropped = 0
        # Of the counts written into `_pending`'s lines: a batch that fails takes them
        # with it, so they are counted again (the soak suite saw a long full disk
        # report only the last failed batches, not the whole gap).
        self._carried = 0
        self._file: TextIO | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None  # the idle writer waits on it
        self._closing = False
        self._stamp: tuple[int, str] = (0, "")
        # For /metrics and the operator's log lines: totals since start, never reset.
        self.dropped_total = 0  # entries that did not reach the file
        self.write_errors = 0  # batches whose write failed
        # Since when (time.monotonic()) entries are being lost, None while all is well;
        # with dropped_total then, to say how many the gap holds once it ends.
        self.failing_since: float | None = None
        self._failing_dropped = 0
        self._failing_errno: int | None = None

    def stamp(self) -> str:
        """The entry's time (whole seconds, UTC), formatted once per second."""
        second = int(time.time())
        if self._stamp[0] != second:
            self._stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)))
        return self._stamp[1]

    @property
    def enabled(self) -> bool:
        return self._target is not None

    @property
    def failing(self) -> bool:
        """Entries are being lost now: the last write failed, or the queue overflowed
        and nothing has been written since."""
        return self.failing_since is not None

    @property
    def queued(self) -> int:
        """Entries waiting for the writer."""
        return len(self._pending)

    def open(self) -> None:
        """Open the file now (start-up), so a bad path fails loudly before serving."""
        if self._target is None:
            return
        if self._target == "-":
            self._file = sys.stdout
        else:
            self._file = self._open_file(Path(self._target))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")

    @staticmethod
    def _open_file(path: Path) -> TextIO:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return path.open("a", encoding="utf-8", buffering=1 << 16)
        except OSError as error:
            raise ConfigError(
                f"--audit-log {path}: cannot open it ({error.strerror}); give a writable file "
                "path whose folder exists or can be made"
            ) from None

    def reopen(self) -> None:
        """SIGHUP: open the file again (log rotation moved it away); lines queued go to
        the new file. A file that cannot be opened keeps the old one, said in the log."""
        if self._target in (None, "-") or self._file is None:
            return
        try:
            fresh = self._open_file(Path(str(self._target)))
        except ConfigError as error:
            log.error("audit log not reopened, still writing to the old file: %s", error)
            return
        old, self._file = self._file, fresh
        # The writer thread may be writing to the old file right now: close it after.
        asyncio.get_running_loop().call_later(1.0, old.close)

    def record(self, entry: AuditEntry) -> None:
        """Queue one entry; never blocks. While closing too: requests that end during
        the drain are still written (the writer stops once nothing is left)."""
        if self._target is None:
            return
        pending = self._pending
        if len(pending) >= QUEUE_LIMIT:
            self._dropped += 1
            self.dropped_total += 1
            if self.failing_since is None:
                self._start_failing(
                    f"{QUEUE_LIMIT} entries wait for a disk that does not keep up", None, 1
                )
            return
        try:
            line = audit_line(entry, self._dropped)
        except Exception:  # a bug must not fail the request; the gap is counted
            log.exception("formatting an audit entry failed")
            self._dropped += 1
            self.dropped_total += 1
            return
        pending.append(line)
        self._carried += self._dropped
        self._dropped = 0
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_write = -BATCH_WINDOW
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup = loop.create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
                continue
            wait = last_write + BATCH_WINDOW - loop.time()
            if wait > 0 and not self._closing:
                await asyncio.sleep(wait)
            batch, self._pending = self._pending, []
            carried, self._carried = self._carried, 0
            try:
                await asyncio.to_thread(self._write, "".join(batch))
            except OSError as error:  # a full or failing disk: say so, count, go on
                self._write_failed(len(batch), carried, error)
            except Exception as error:  # a bug must not stop the audit log for good
                log.exception("writing %d audit entries failed", len(batch))
                self._write_failed(len(batch), carried, error)
            else:
                if self.failing_since is not None:
                    self._recovered()
            last_write = loop.time()

    def _write_failed(self, entries: int, carried: int, error: Exception) -> None:
        """A batch did not reach the file: count it (and the counts its lines carried,
        which go with it) and say so when the log starts failing or fails otherwise
        (another errno); the same failure again is said at debug level only."""
        self._dropped += entries + carried
        self.dropped_total += entries
        self.write_errors += 1
        code = error.errno if isinstance(error, OSError) else None
        if self.failing_since is None:
            self._start_failing(f"writing {entries} audit entries failed: {error}", code, entries)
        elif code != self._failing_errno:
            self._failing_errno = code
            log.error("the audit log %s still loses entries, now: writing %d audit entries "
                      "failed: %s", self._target, entries, error)  # fmt: skip
        else:
            log.debug("writing %d audit entries failed: %s", entries, error)

    def _start_failing(self, why: str, code: int | None, lost: int) -> None:
        """Entries are being lost from now on (`lost` of them just now): one line."""
        self.failing_since = time.monotonic()
        self._failing_dropped = self.dropped_total - lost  # the gap's start
        self._failing_errno = code
        log.error(
            "the audit log %s is losing entries (%s); requests go on and the entries not "
            "written are counted (dockmoat_audit_dropped_total; audit_dropped_before on "
            "the entry after the gap)",
            self._target, why,
        )  # fmt: skip

    def _recovered(self) -> None:
        assert self.failing_since is not None
        lost = self.dropped_total - self._failing_dropped
        log.warning(
            "the audit log %s is written again after %.1f s; %d entries were not written "
            "(audit_dropped_before on the entry after the gap)",
            self._target, time.monotonic() - self.failing_since, lost,
        )  # fmt: skip
        self.failing_since = None
        self._failing_errno = None

    def _write(self, text: str) -> None:
        file = self._file
        if file is None:
            return
        if file is sys.stdout:
            file.write(text)
            file.flush()
            return
        append_whole(file.fileno(), text.encode("utf-8"))

    async def close(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        self._closing = True
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        try:
            await asyncio.wait_for(self._task, timeout=10)
        except TimeoutError:
            log.error("the audit log was not written within 10 s; %d entries lost",
                      len(self._pending))  # fmt: skip
            self.dropped_total += len(self._pending)
        except asyncio.CancelledError:
            pass
        if self.failing_since is not None:
            log.error(
                "serve stops with the audit log %s still failing: %d entries not written "
                "in the last %.1f s", self._target,
                self.dropped_total - self._failing_dropped,
                time.monotonic() - self.failing_since,
            )  # fmt: skip
        if self._file is not None and self._file is not sys.stdout:
            self._file.close()
