import sqlite3
from pathlib import Path

from dockmoat.tenancy.store import JobRecord, OwnershipStore


def _record(job: str, created: float = 100.0, ttl: float | None = None) -> JobRecord:
    return JobRecord(job, created, ttl, "/ws", None, f"/run/{job}.sock", '{"volumes": 2}')


def test_ownership_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.db"
    store = OwnershipStore(path)
    store.add_job(_record("a"))
    store.add("a", "container", "c1")
    store.add("a", "tag", "app:latest")
    store.add("a", "tag", "app:latest")  # idempotent
    store.close()

    again = OwnershipStore(path)
    assert again.get_job("a") == _record("a")
    assert again.owned("a", "container") == ["c1"]
    assert again.owners("tag", "app:latest") == {"a"}
    assert again.counts("a")["tag"] == 1
    assert path.stat().st_mode & 0o777 == 0o600
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_remove_job_forgets_everything(tmp_path: Path) -> None:
    store = OwnershipStore(tmp_path / "s.db")
    store.add_job(_record("a"))
    store.add_job(_record("b"))
    store.add("a", "volume", "a--v")
    store.add("b", "volume", "b--v")
    store.remove_job("a")
    assert store.get_job("a") is None
    assert store.owned("a", "volume") == []
    assert store.all_owned("volume") == {"b--v": {"b"}}
    store.discard("b", "volume", "b--v")
    assert store.owned("b", "volume") == []


def test_expiry() -> None:
    record = _record("a", created=100.0, ttl=10.0)
    assert not record.expired(109.9)
    assert record.expired(110.0)
    assert not _record("b").expired(1e12)


def test_a_database_from_before_job_modes_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE jobs (job TEXT PRIMARY KEY, created REAL NOT NULL, ttl REAL, "
            "workspace TEXT, policy TEXT, socket TEXT NOT NULL, quotas TEXT NOT NULL "
            "DEFAULT '{}')"
        )
        db.execute("INSERT INTO jobs VALUES ('old', 1.0, NULL, NULL, NULL, '/run/old.sock', '{}')")
    store = OwnershipStore(path)
    old = store.get_job("old")
    assert old is not None and old.mode == "enforce"
    store.add_job(JobRecord("new", 2.0, None, None, None, "/run/new.sock", "{}", "warn"))
    assert [(job.job, job.mode) for job in store.jobs()] == [("old", "enforce"), ("new", "warn")]


def test_closed_jobs_are_remembered_and_failed_opens_are_not(tmp_path: Path) -> None:
    store = OwnershipStore(tmp_path / "state.db")
    store.add_job(_record("a"))
    store.remove_job("a")
    assert store.was_closed("a")
    store.add_job(_record("b"))
    store.remove_job("b", closed=False)  # an open undone half-way
    assert not store.was_closed("b")
