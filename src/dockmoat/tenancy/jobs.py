"""Jobs: open (a socket of its own), close (everything it owns removed), TTL expiry, restart.

The gateway provides the listeners through `ListenerHost`; the store is the
record of what is open, so after a restart (even after SIGKILL) `restore()`
reopens every job's socket and expired jobs are closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dockmoat.errors import ConfigError, NotFoundError
from dockmoat.policy.hostpaths import mount_flags_warning
from dockmoat.tenancy.cleanup import Removed, clean_up
from dockmoat.tenancy.engine import EngineApi
from dockmoat.tenancy.model import TENANT_LABEL, Quotas, Tenant, label_owner
from dockmoat.tenancy.names import SEPARATOR, validate_job_name
from dockmoat.tenancy.store import JobRecord, OwnershipStore

log = logging.getLogger("dockmoat.tenancy")

DEFAULT_JOBS_DIR = Path("/run/dockmoat/jobs")
REAP_INTERVAL_S = 5.0


class ListenerHost(Protocol):
    """What the gateway does for jobs: a listener per job socket, tagged with the tenant."""

    async def add_job_listener(self, job: JobRecord) -> None: ...

    async def remove_job_listener(self, job: JobRecord) -> None: ...


@dataclass(frozen=True, slots=True)
class JobStatus:
    record: JobRecord
    counts: dict[str, int]


def _quotas(record: JobRecord) -> Quotas:
    raw = json.loads(record.quotas or "{}")
    return Quotas(
        running_containers=raw.get("running_containers"),
        memory_bytes=raw.get("memory_bytes"),
        volumes=raw.get("volumes"),
    )


class JobManager:
    def __init__(
        self,
        store: OwnershipStore,
        engine: EngineApi,
        host: ListenerHost,
        jobs_dir: Path = DEFAULT_JOBS_DIR,
        default_quotas: Quotas | None = None,
        clock: Callable[[], float] = time.time,
        reserved: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        # Tenant names of the server's listeners: a job by that name would share their things.
        self.reserved = reserved
        self.engine = engine
        self.host = host
        self.jobs_dir = jobs_dir
        self.default_quotas = default_quotas or Quotas()
        self.clock = clock
        self._tenants: dict[str, Tenant] = {}
        # Open and close of one job must not interleave (close during open, TTL vs close).
        self._lock = asyncio.Lock()

    def tenant_for(self, name: str) -> Tenant | None:
        """The tenant of an open job (the stage's view); None once it is closing or closed."""
        return self._tenants.get(name)

    def _tenant(self, record: JobRecord) -> Tenant:
        return Tenant.job(record.job, _quotas(record))

    async def open(
        self,
        job: str,
        workspace: str | None = None,
        policy: str | None = None,
        ttl: int | None = None,
        quotas: Quotas | None = None,
        warn: bool = False,
        socket: Path | None = None,
    ) -> JobRecord:
        """Open a job; its socket is `jobs_dir/JOB.sock` unless given (the job-open
        socket's capability names, tenancy/jobopen.py)."""
        validate_job_name(job)
        if job in self.reserved:
            raise ConfigError(
                f"{job} is the tenant of a listener of this server; choose another job name"
            )
        if workspace is not None:
            resolved = Path(workspace).resolve()
            if not resolved.is_dir():
                raise ConfigError(f"workspace {workspace} is not a directory")
            workspace = str(resolved)
            # Bindable by the job like an --allow-bind folder: the same risk, said the
            # same way.
            warning = mount_flags_warning(resolved)
            if warning:
                log.warning("job %s: workspace %s is %s", job, workspace, warning)
        if policy is not None and not Path(policy).is_file():
            raise ConfigError(f"policy file {policy} does not exist")
        q = quotas or self.default_quotas
        record = JobRecord(
            job=job,
            created=self.clock(),
            ttl=float(ttl) if ttl else None,
            workspace=workspace,
            policy=policy,
            socket=str(socket or self.jobs_dir / f"{job}.sock"),
            quotas=json.dumps(
                {
                    "running_containers": q.running_containers,
                    "memory_bytes": q.memory_bytes,
                    "volumes": q.volumes,
                }
            ),
            mode="warn" if warn else "enforce",
        )
        async with self._lock:
            if self.store.get_job(job) is not None:
                raise ConfigError(f"job {job} is open already; close it first")
            self.store.add_job(record)
            try:
                await self.host.add_job_listener(record)
            except BaseException:
                self.store.remove_job(job, closed=False)
                raise
            self._tenants[job] = self._tenant(record)
        log.info("job %s opened on %s%s", job, record.socket, " (warn mode)" if warn else "")
        return record

    async def close(self, job: str) -> Removed:
        async with self._lock:
            record = self.store.get_job(job)
            if record is None:
                raise NotFoundError(f"no open job {job}")
            # The socket goes first so that nothing new is created while we clean up.
            self._tenants.pop(job, None)
            await self.host.remove_job_listener(record)
            removed = await clean_up(self.store, self.engine, self._tenant(record))
            self.store.remove_job(job)
        log.info("job %s closed: %s", job, removed.as_dict())
        return removed

    async def ls(self) -> list[JobStatus]:
        """Open jobs and what they own now (counted on the engine, by label and name space)."""
        records = self.store.jobs()
        counts = {
            r.job: dict.fromkeys(("container", "volume", "network", "image"), 0) for r in records
        }
        any_tenant = {"label": [TENANT_LABEL]}
        for kind, path in (("container", "/containers/json"), ("network", "/networks")):
            query: dict[str, object] = {"filters": any_tenant}
            if kind == "container":
                query["all"] = "1"
            status, answer = await self.engine.call("GET", path, query)
            for entry in answer if status == 200 and isinstance(answer, list) else []:
                owner = label_owner(entry.get("Labels"))
                if owner in counts:
                    counts[owner][kind] += 1
        status, answer = await self.engine.call("GET", "/volumes")
        volumes = answer.get("Volumes") if status == 200 and isinstance(answer, dict) else None
        for volume in volumes or []:
            owner = label_owner(volume.get("Labels"))
            if owner is None:
                owner = str(volume.get("Name", "")).partition(SEPARATOR)[0]
            if owner in counts:
                counts[owner]["volume"] += 1
        for record in records:
            stored = self.store.counts(record.job)
            counts[record.job]["image"] = stored["tag"] + stored["image"]
        return [JobStatus(r, counts[r.job]) for r in records]

    async def expire_due(self) -> list[str]:
        """Close every job past its TTL; returns their names."""
        now = self.clock()
        closed: list[str] = []
        for record in self.store.jobs():
            if record.expired(now):
                try:
                    await self.close(record.job)
                    closed.append(record.job)
                except NotFoundError:
                    pass  # closed by hand meanwhile
        return closed

    async def restore(self) -> None:
        """After a (re)start: reopen the sockets of jobs the store knows, close expired ones.

        A job whose socket cannot be reopened (its policy file is gone, say) stays in
        the store without a socket, so that `job close` still cleans it up.
        """
        for record in self.store.jobs():
            try:
                await self.host.add_job_listener(record)
            except Exception:  # one broken job must not keep the others (or serve) down
                log.exception("job %s: cannot reopen its socket; close it to clean up", record.job)
                continue
            self._tenants[record.job] = self._tenant(record)
        await self.expire_due()

    async def reap_forever(self, interval: float = REAP_INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire_due()
            except Exception:  # a failed round is retried at the next one
                log.exception("closing expired jobs failed; retrying in %.0fs", interval)
