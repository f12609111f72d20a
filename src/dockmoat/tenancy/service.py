"""Tenancy inside `dockmoat serve`: the stage on every listener, job sockets, the control socket.

Wiring (in the serve command):

    gateway = Gateway(settings, policy, audit=...)
    tenancy = TenancyService(gateway, TenancySettings(...))   # installs the stage
    await gateway.start()
    await tenancy.start()        # control socket, jobs reopened from the store, TTL reaper
    ...
    await tenancy.stop()         # before gateway.drain(); jobs stay open (they survive restarts)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockmoat.errors import ConfigError
from dockmoat.gateway.config import Endpoint, ListenerSettings
from dockmoat.gateway.server import Gateway
from dockmoat.policy.engine import load_policy
from dockmoat.tenancy.control import DEFAULT_CONTROL, serve_control
from dockmoat.tenancy.engine import PooledEngine
from dockmoat.tenancy.jobs import DEFAULT_JOBS_DIR, JobManager
from dockmoat.tenancy.model import Quotas, Tenant
from dockmoat.tenancy.names import Namespace
from dockmoat.tenancy.stage import TenancyStage
from dockmoat.tenancy.store import DEFAULT_STATE_DB, JobRecord, OwnershipStore

log = logging.getLogger("dockmoat.tenancy")

# The baseline rules this stage replaces on job sockets: it allows joins between
# the job's own containers and resolves them to full ids (anything else is a 404).
JOIN_RULES = ("containers.namespace-joins", "containers.volumes-from", "containers.links")


@dataclass(frozen=True, slots=True)
class TenancySettings:
    state_db: Path = DEFAULT_STATE_DB
    control: Path = DEFAULT_CONTROL
    jobs_dir: Path = DEFAULT_JOBS_DIR
    default_quotas: Quotas = field(default_factory=Quotas)
    reap_interval: float = 5.0


class TenancyService:
    """Implements the job manager's `ListenerHost` on a running gateway."""

    def __init__(self, gateway: Gateway, settings: TenancySettings | None = None) -> None:
        self.gateway = gateway
        self.settings = settings or TenancySettings()
        self.store = OwnershipStore(self.settings.state_db)
        self.engine = PooledEngine(gateway.upstream)
        self.jobs = JobManager(
            self.store,
            self.engine,
            self,
            jobs_dir=self.settings.jobs_dir,
            default_quotas=self.settings.default_quotas,
        )
        # Listeners started with `--tenant NAME` are tenants without a job (no close, no TTL).
        self._static: dict[str, Tenant] = {}
        for listener in gateway.settings.listeners:
            if listener.tenant is not None:
                Namespace.for_job(listener.tenant)  # same naming rules as jobs; ConfigError
                self._static[listener.tenant] = Tenant.job(listener.tenant)
        self.stage = TenancyStage(self.store, self.engine, self.tenant_for)
        gateway.default_stage = self.stage
        self._control: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None

    def tenant_for(self, name: str) -> Tenant | None:
        return self.jobs.tenant_for(name) or self._static.get(name)

    async def start(self) -> None:
        await self.jobs.restore()
        self._control = await serve_control(self.settings.control, self.jobs)
        self._reaper = asyncio.create_task(self.jobs.reap_forever(self.settings.reap_interval))
        log.info(
            "tenancy: control socket %s, %d job(s) reopened, state %s",
            self.settings.control,
            len(self.store.jobs()),
            self.settings.state_db,
        )

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self._control is not None:
            self._control.close()
            with contextlib.suppress(FileNotFoundError):
                self.settings.control.unlink()
        for record in self.store.jobs():
            await self.gateway.remove_listener(_url(record))
        self.store.close()

    # --- ListenerHost ---

    def _job_policy(self, record: JobRecord) -> Any:
        allow_bind = [Path(record.workspace)] if record.workspace else []
        base: Any
        if record.policy is not None:
            base = load_policy(
                profile=self.gateway.settings.profile,
                policy_file=Path(record.policy),
                allow_bind=allow_bind,
            )
        else:
            base = self.gateway.policy
        derive = getattr(base, "derive", None)
        if derive is None:
            return base  # a policy without rules to vary (permissive)
        return derive(allow_bind=allow_bind, disable=JOIN_RULES)

    async def add_job_listener(self, job: JobRecord) -> None:
        policy = self._job_policy(job)
        path = Path(job.socket)
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        listener = ListenerSettings(
            endpoint=Endpoint(url=_url(job), kind="unix", path=path), tenant=job.job
        )
        try:
            await self.gateway.add_listener(listener, policy=policy, stage=self.stage)
        except OSError as error:
            raise ConfigError(f"cannot listen on {path}: {error}") from error

    async def remove_job_listener(self, job: JobRecord) -> None:
        await self.gateway.remove_listener(_url(job))


def _url(record: JobRecord) -> str:
    return f"unix://{record.socket}"
