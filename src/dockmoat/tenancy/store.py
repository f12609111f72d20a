"""The ownership store: which job owns what, on SQLite, surviving restarts.

Labels on the engine (`dockmoat.tenant=<job>`) carry ownership of containers,
volumes, networks and built images; this store keeps what labels cannot
(image tags, pulled or loaded image ids, exec ids) and a second copy of the
rest, so that `job close` finds everything even after the gateway was killed
between forwarding a create and seeing its answer (ids are recorded before
forwarding where the name is known, and from the answer otherwise).

One connection per store object; sqlite3 serialises writers itself and WAL
lets readers run beside them. Every method is a short transaction.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dockmoat.errors import ConfigError, StateError

Kind = Literal["container", "volume", "network", "image", "tag", "exec", "tagged"]
# "tagged": `TAG=IMAGE-ID`, the image a job's `docker tag` pointed TAG at (proof that a
# tag still names what the job tagged when the job closes).
KINDS: tuple[Kind, ...] = ("container", "volume", "network", "image", "tag", "exec", "tagged")

DEFAULT_STATE_DB = Path("/var/lib/dockmoat/state.db")
CLOSED_KEPT_S = 30 * 24 * 3600.0  # CI job ids do not come back; a month bounds the table

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job        TEXT PRIMARY KEY,
    created    REAL NOT NULL,
    ttl        REAL,              -- seconds; NULL = no expiry
    workspace  TEXT,
    policy     TEXT,
    socket     TEXT NOT NULL,
    quotas     TEXT NOT NULL DEFAULT '{}',  -- JSON: running_containers, memory_bytes, volumes
    mode       TEXT NOT NULL DEFAULT 'enforce'  -- or 'warn' (job open --warn)
);
CREATE TABLE IF NOT EXISTS owned (
    job   TEXT NOT NULL,
    kind  TEXT NOT NULL,
    key   TEXT NOT NULL,          -- full id, engine-side name or image tag
    added REAL NOT NULL,
    PRIMARY KEY (job, kind, key)
);
CREATE INDEX IF NOT EXISTS owned_by_key ON owned (kind, key);
CREATE TABLE IF NOT EXISTS closed (
    job    TEXT PRIMARY KEY,      -- a job closed (job close, TTL): its token opens nothing
    closed REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL              -- the last write probe (`writable`)
);
"""


@dataclass(frozen=True, slots=True)
class JobRecord:
    job: str
    created: float
    ttl: float | None
    workspace: str | None
    policy: str | None
    socket: str
    quotas: str = "{}"
    mode: str = "enforce"  # "warn": the job's would-be denials are forwarded (job open --warn)

    def expired(self, now: float) -> bool:
        return self.ttl is not None and now >= self.created + self.ttl


class OwnershipStore:
    """Jobs and the resources they own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            if "mode" not in columns:  # a database from before `job open --warn`
                self._db.execute("ALTER TABLE jobs ADD COLUMN mode TEXT NOT NULL DEFAULT 'enforce'")
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot open the state database {path}: {error}") from error
        path.chmod(0o600)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. A database that cannot be written (its disk full or
        read-only, a failing disk) is a StateError, which the gateway answers with 503
        and `/ready` reports, instead of an internal error per request."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.IntegrityError:
            raise  # a constraint, not the disk: the caller's to answer
        except (sqlite3.DatabaseError, OSError) as error:
            if self._db.in_transaction:
                with suppress(sqlite3.Error):  # the transaction may be gone with the failure
                    self._db.execute("ROLLBACK")
            message = f"the state database {self.path} cannot be written: {error}"
            raise StateError(message) from error

    def writable(self) -> tuple[bool, str]:
        """A write probe for readiness: (writable?, why not)."""
        try:
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO health (id, at) VALUES (1, ?)", (time.time(),))
        except StateError as error:
            return False, str(error)
        return True, "writable"

    # jobs

    def add_job(self, record: JobRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (job, created, ttl, workspace, policy, socket, quotas, mode) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.job,
                    record.created,
                    record.ttl,
                    record.workspace,
                    record.policy,
                    record.socket,
                    record.quotas,
                    record.mode,
                ),
            )

    def get_job(self, job: str) -> JobRecord | None:
        row = self._db.execute(
            "SELECT job, created, ttl, workspace, policy, socket, quotas, mode FROM jobs "
            "WHERE job = ?",
            (job,),
        ).fetchone()
        return JobRecord(*row) if row else None

    def jobs(self) -> list[JobRecord]:
        rows = self._db.execute(
            "SELECT job, created, ttl, workspace, policy, socket, quotas, mode FROM jobs "
            "ORDER BY created"
        ).fetchall()
        return [JobRecord(*row) for row in rows]

    def remove_job(self, job: str, *, closed: bool = True) -> None:
        """Forget a job and everything recorded for it (after its clean-up); remember
        that it was closed (kept 30 days), so that a job token cannot open it again.
        `closed=False`: an open that failed half-way is undone, nothing was closed."""
        now = time.time()
        with self._tx() as db:
            db.execute("DELETE FROM owned WHERE job = ?", (job,))
            db.execute("DELETE FROM jobs WHERE job = ?", (job,))
            if closed:
                db.execute("INSERT OR REPLACE INTO closed (job, closed) VALUES (?, ?)", (job, now))
                db.execute("DELETE FROM closed WHERE closed < ?", (now - CLOSED_KEPT_S,))

    def was_closed(self, job: str) -> bool:
        row = self._db.execute("SELECT 1 FROM closed WHERE job = ?", (job,)).fetchone()
        return row is not None

    # ownership

    def add(self, job: str, kind: Kind, key: str, now: float | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO owned (job, kind, key, added) VALUES (?, ?, ?, ?)",
                (job, kind, key, time.time() if now is None else now),
            )

    def discard(self, job: str, kind: Kind, key: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM owned WHERE job = ? AND kind = ? AND key = ?", (job, kind, key))

    def owned(self, job: str, kind: Kind) -> list[str]:
        rows = self._db.execute(
            "SELECT key FROM owned WHERE job = ? AND kind = ? ORDER BY added, key", (job, kind)
        ).fetchall()
        return [row[0] for row in rows]

    def owners(self, kind: Kind, key: str) -> set[str]:
        rows = self._db.execute(
            "SELECT job FROM owned WHERE kind = ? AND key = ?", (kind, key)
        ).fetchall()
        return {row[0] for row in rows}

    def all_owned(self, kind: Kind) -> dict[str, set[str]]:
        """Every key of a kind, with the jobs that own it."""
        result: dict[str, set[str]] = {}
        for job, key in self._db.execute("SELECT job, key FROM owned WHERE kind = ?", (kind,)):
            result.setdefault(key, set()).add(job)
        return result

    def counts(self, job: str) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        for kind, count in self._db.execute(
            "SELECT kind, COUNT(*) FROM owned WHERE job = ? GROUP BY kind", (job,)
        ):
            counts[kind] = count
        return counts
