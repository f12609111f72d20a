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
