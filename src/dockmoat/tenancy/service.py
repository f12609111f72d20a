"""Tenancy inside `dockmoat serve`: the stage on every listener, job sockets, the control socket.

Wiring (the serve command):

    tenancy = TenancyService(settings, TenancySettings(...))  # opens the store; ConfigError
    await serve(settings, loader, stage=tenancy.stage, on_start=tenancy.start)

`start(gateway)` reopens the sockets of the jobs the store knows (they survive
restarts, even SIGKILL), closes expired ones, then serves the control socket
and closes jobs when their TTL passes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockmoat.api.request import ClientIdentity
from dockmoat.errors import ConfigError
from dockmoat.gateway.config import Endpoint, ListenerSettings, ServeSettings
from dockmoat.gateway.preflight import MAX_SOCKET_PATH
from dockmoat.gateway.server import Gateway
from dockmoat.policy.decision import Deny
from dockmoat.policy.engine import CompiledPolicy, load_policy
from dockmoat.policy.weakening import check_extends, weakenings
from dockmoat.tenancy.control import (
    DEFAULT_CONTROL,
    control_in_use,
    remove_socket,
    serve_control,
)
from dockmoat.tenancy.engine import PooledEngine
from dockmoat.tenancy.jobopen import JobOpenSettings, serve_job_open
from dockmoat.tenancy.jobs import DEFAULT_JOBS_DIR, JobManager
from dockmoat.tenancy.model import Quotas, Tenant
from dockmoat.tenancy.names import validate_job_name
from dockmoat.tenancy.stage import TenancyStage, daemon_sockets
from dockmoat.tenancy.store import DEFAULT_STATE_DB, JobRecord, OwnershipStore

log = logging.getLogger("dockmoat.tenancy")

CN_RULE = "tenancy.client-cn"
_CN_REFUSAL = (
    "dockmoat: tenancy.client-cn: this listener takes the tenant from the client "
    "certificate's CN, and your certificate"
)
_CN_HINT = (
    "Use a client certificate whose subject has exactly one CN: lowercase letters, digits, "
    "'.', '_' and single '-'."
)

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
    job_open: JobOpenSettings | None = None  # runner pods open their own jobs by token


class TenancyService:
    """The job manager's `ListenerHost` on a running gateway, and the stage of every listener."""

    def __init__(self, serve_settings: ServeSettings, settings: TenancySettings | None = None):
        self.serve_settings = serve_settings
        self.settings = settings or TenancySettings()
        self.store = OwnershipStore(self.settings.state_db)
        # Listener tenants (`--tenant NAME`, or the name derived from the listener's
        # address) are tenants without a job: no close, no TTL, the default job quotas.
        self._static: dict[str, Tenant] = {}
        for listener in serve_settings.listeners:
            if listener.tenant is not None:
                self._static[listener.tenant] = Tenant.job(  # ConfigError
                    listener.tenant, self.settings.default_quotas
                )
        # Listeners whose clients are the tenant their certificate's CN names.
        self._cn_listeners = frozenset(
            listener.endpoint.url for listener in serve_settings.listeners
            if listener.tenant_from_cn
        )  # fmt: skip
        upstream = serve_settings.upstream
        self.stage = TenancyStage(
            self.store,
            self.tenant_of,
            untenanted=self.untenanted,
            socket_of=self.job_socket,
            daemon_sockets=daemon_sockets(upstream.path if upstream.kind == "unix" else None),
        )
        self.jobs: JobManager | None = None
        self._gateway: Gateway | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._control: asyncio.Server | None = None
        self._job_open: asyncio.Server | None = None

    def tenant_for(self, name: str) -> Tenant | None:
        tenant = self.jobs.tenant_for(name) if self.jobs is not None else None
        return tenant or self._static.get(name)

    def job_socket(self, name: str) -> str | None:
        """An open job's own socket (None for listener tenants, which have none)."""
        record = self.store.get_job(name) if self.jobs is not None else None
        return record.socket if record is not None else None

    def untenanted(self, client: ClientIdentity) -> bool:
        """Whether `tenant_of` is None for this client, now and for as long as its
        connection lasts (a listener without tenancy: none of these inputs change)."""
        return client.listener not in self._cn_listeners and client.tenant is None

    def tenant_of(self, client: ClientIdentity) -> Tenant | Deny | None:
        """Who a client is (the stage's question); None on a listener without tenancy."""
        if client.listener in self._cn_listeners:
            return self._cn_tenant(client.tenant)
        if client.tenant is None:
            return None
        tenant = self.tenant_for(client.tenant)
        if tenant is None:
            return Deny(
                "tenancy.unknown-tenant", f"dockmoat: tenancy: job {client.tenant} is closed."
            )
        return tenant

    def _cn_tenant(self, cn: str | None) -> Tenant | Deny:
        if cn is None:
            return Deny(CN_RULE, f"{_CN_REFUSAL} has no single CN. {_CN_HINT}")
        try:
            validate_job_name(cn)
        except ConfigError:
            return Deny(CN_RULE, f"{_CN_REFUSAL} has the CN {cn!r}, not a tenant name. {_CN_HINT}")
        if self.jobs is not None and self.jobs.tenant_for(cn) is not None:
            # A certificate must not open a job's things (close would also remove its own).
            return Deny(CN_RULE, f"{_CN_REFUSAL} has the CN {cn!r}, the name of an open job.")
        # A CN may name a listener tenant: those clients then share its things.
        return self._static.get(cn) or Tenant.job(cn, self.settings.default_quotas)

    async def start(self, gateway: Gateway) -> None:
        self._gateway = gateway
        gateway.readiness.append(self.store.writable)
        if control_in_use(self.settings.control):
            # Jobs belong to the server that answers there; never take them over.
            log.warning(
                "tenancy: %s is served by another dockmoat serve; job control disabled here "
                "(give this one its own --control-socket and --state-db)",
                self.settings.control,
            )
            return
        self.jobs = JobManager(
            self.store,
            PooledEngine(gateway.upstream),
            self,
            jobs_dir=self.settings.jobs_dir,
            default_quotas=self.settings.default_quotas,
            reserved=frozenset(self._static),
        )
        await self.jobs.restore()
        self._control = await serve_control(self.settings.control, self.jobs, denials=self._closed)
        if self.settings.job_open is not None:
            self._job_open = await serve_job_open(self.settings.job_open, self.jobs)
        self._tasks.append(asyncio.create_task(self.jobs.reap_forever(self.settings.reap_interval)))
        log.info(
            "tenancy: control socket %s, %d job(s) open, state %s",
            self.settings.control,
            len(self.store.jobs()),
            self.settings.state_db,
        )

    async def _closed(self, job: str) -> list[dict[str, object]]:
        """A job was closed (`job close`): remove its bind pins now; its denials."""
        assert self._gateway is not None
        if self._gateway.pins is not None:
            await self._gateway.pins.release(self._gateway.upstream, job)
        return self._gateway.metrics.take_denials(job)

    def remove_control(self) -> None:
        """serve stops: remove the control socket this server made (never another's)."""
        if self._control is None:
            return
        self._control.close()
        self._control = None
        remove_socket(self.settings.control)
        if self._job_open is not None and self.settings.job_open is not None:
            self._job_open.close()
            self._job_open = None
            remove_socket(self.settings.job_open.socket)

    # --- ListenerHost ---

    def _job_policy(self, record: JobRecord) -> Any:
        assert self._gateway is not None
        allow_bind = [Path(record.workspace)] if record.workspace else []
        base: Any
        if record.policy is not None:
            base = load_policy(
                profile=self.serve_settings.profile,
                policy_file=Path(record.policy),
                allow_bind=allow_bind,
            )
            settings = self.serve_settings
            check_extends(  # ConfigError: `job open` is refused (restore logs it)
                base.file,
                record.policy,
                settings.profile if settings.profile_given else None,
                override=settings.policy_overrides_profile,
            )
            for line in weakenings(base):
                log.warning("job %s: policy %s weakens %s: %s", record.job, record.policy,
                            base.profile, line)  # fmt: skip
        else:
            base = self._gateway.policy
        derive = getattr(base, "derive", None)
        if derive is None:
            return base  # a policy without rules to vary (permissive)
        policy = derive(allow_bind=allow_bind, disable=JOIN_RULES, own_socket=Path(record.socket))
        if record.mode == "warn" and isinstance(policy, CompiledPolicy):
            policy = dataclasses.replace(policy, mode="warn")  # job open --warn
        return policy

    async def add_job_listener(self, job: JobRecord) -> None:
        if self._gateway is None:
            raise RuntimeError("tenancy is not started")
        policy = self._job_policy(job)
        path = Path(job.socket)
        size = len(os.fsencode(path))
        if size > MAX_SOCKET_PATH:
            raise ConfigError(
                f"job {job.job}: its socket {path} would be {size} bytes, the kernel allows "
                f"{MAX_SOCKET_PATH}; use a shorter job name (or serve a shorter --jobs-dir)"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as error:
            raise ConfigError(
                f"job {job.job}: cannot make its socket's folder {path.parent} "
                f"({error.strerror}); serve's --jobs-dir must be a folder it can write"
            ) from None
        listener = ListenerSettings(
            endpoint=Endpoint(url=_url(job), kind="unix", path=path), tenant=job.job
        )
        try:
            await self._gateway.add_listener(listener, policy=policy, stage=self.stage)
        except OSError as error:
            raise ConfigError(f"cannot listen on {path}: {error}") from error

    async def remove_job_listener(self, job: JobRecord) -> None:
        if self._gateway is not None:
            await self._gateway.remove_listener(_url(job))


def _url(record: JobRecord) -> str:
    return f"unix://{record.socket}"
