"""`dockmoat serve`: the guarded socket (see ../shared/PRODUCT.md)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from dockmoat.errors import ConfigError
from dockmoat.gateway.config import DEFAULT_PIN_DIR, ServeSettings, build_settings
from dockmoat.gateway.stages import PermissivePolicy, Policy
from dockmoat.policy.hostpaths import mount_flags_warning
from dockmoat.tenancy.control import DEFAULT_CONTROL
from dockmoat.tenancy.jobopen import JobOpenSettings
from dockmoat.tenancy.jobs import DEFAULT_JOBS_DIR
from dockmoat.tenancy.service import TenancySettings
from dockmoat.tenancy.store import DEFAULT_STATE_DB


def policy_loader(settings: ServeSettings) -> Callable[[], Policy]:
    """Load (and on SIGHUP reload) the policy the settings name; ConfigError when bad."""

    def load() -> Policy:
        try:
            from dockmoat.policy.engine import load_policy
        except ImportError:
            if settings.profile == "permissive" and settings.policy_file is None:
                return PermissivePolicy()
            raise ConfigError(
                f"profile {settings.profile}: the policy engine is not installed; "
                "only --profile permissive is available"
            ) from None
        from dockmoat.policy.weakening import check_extends, weakenings

        policy = load_policy(
            profile=settings.profile,
            policy_file=settings.policy_file,
            allow_bind=settings.allow_bind,
            env=dict(os.environ),
            protect=(str(settings.pin_dir),),
            warn=settings.mode == "warn",
        )
        check_extends(
            policy.file,
            str(settings.policy_file),
            settings.profile if settings.profile_given else None,
            override=settings.policy_overrides_profile,
        )
        said = (policy.profile, policy.mode, tuple(weakenings(policy)))
        if said != last[0]:  # said once per change: at start, and on a reload that changes it
            last[0] = said
            serve_log = logging.getLogger("dockmoat.serve")
            for line in said[2]:
                serve_log.warning("policy %s weakens %s: %s", settings.policy_file, said[0], line)
            if settings.mode == "warn":
                serve_log.warning(
                    "warn mode: requests the policy would deny are forwarded and audited "
                    "as would_deny"
                )
        return policy

    last: list[tuple[str, str, tuple[str, ...]] | None] = [None]
    return load


def run(settings: ServeSettings, tenancy_settings: TenancySettings | None = None) -> None:
    """Serve in the foreground until SIGTERM/SIGINT."""
    from dockmoat.gateway.preflight import check_serve, serve_footprint
    from dockmoat.gateway.server import Gateway, serve
    from dockmoat.tenancy.service import TenancyService

    paths = tenancy_settings or TenancySettings()
    where = {"state_db": paths.state_db, "control": paths.control, "jobs_dir": paths.jobs_dir}
    check_serve(settings, **where)  # every path, before anything is made
    loader = policy_loader(settings)
    loader()  # fail loudly before opening any socket
    # A start that fails anyway (a port in use) removes what it made.
    footprint = serve_footprint(settings, **where)
    started = False
    tenancy: TenancyService | None = None

    async def on_start(gateway: Gateway) -> None:
        nonlocal started
        assert tenancy is not None
        await tenancy.start(gateway)
        started = True

    try:
        import uvloop

        runner: Callable[..., None] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    try:
        # Tenancy: the stage of every listener, job sockets and the job control socket.
        tenancy = TenancyService(settings, tenancy_settings)
        runner(serve(settings, loader, stage=tenancy.stage, on_start=on_start))
    finally:
        if tenancy is not None:
            tenancy.remove_control()
        if not started:
            if tenancy is not None:
                tenancy.store.close()
            footprint.undo()


def _private_listen(port: int | None) -> list[str]:
    if port is None:
        return []
    from dockmoat.deploy.private_network import interface_addresses, private_listen_urls

    urls = private_listen_urls(port, interface_addresses())
    logging.getLogger("dockmoat.serve").warning(
        "plain TCP on the private container network (--private-network-port): %s; every "
        "container on that network can use this API, under the policy",
        ", ".join(urls),
    )
    return urls


@click.command(name="serve")
@click.option(
    "--listen",
    "listen",
    multiple=True,
    metavar="URL",
    help="unix:///path (default unix:///run/dockmoat/docker.sock) or tcp://HOST:PORT; repeatable.",
)
@click.option(
    "--upstream",
    metavar="URL",
    help="The real daemon (default $DOCKER_HOST, else unix:///var/run/docker.sock).",
)
@click.option("--policy", "policy_file", type=click.Path(path_type=Path), help="Policy YAML file.")
@click.option(
    "--profile", default="baseline", show_default=True, help="baseline, restricted or permissive."
)
@click.option(
    "--allow-bind",
    "allow_bind",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Host folder bind mounts may come from; repeatable.",
)
@click.option(
    "--bind-pins",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="Pin each checked bind source, so that a symlink swapped in later cannot redirect "
    "it (needs root in dockerd's mount namespace; auto: when possible, else a warning).",
)
@click.option(
    "--pin-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_PIN_DIR,
    show_default=True,
    help="Where bind sources are pinned (root-only; no bind may expose it).",
)
@click.option("--audit-log", metavar="FILE", help="Append one JSON line per request; - for stdout.")
@click.option(
    "--tls-cert", type=click.Path(path_type=Path), help="Server certificate (TCP, mutual TLS)."
)
@click.option("--tls-key", type=click.Path(path_type=Path), help="Server key.")
@click.option(
    "--tls-ca", type=click.Path(path_type=Path), help="CA that client certificates must chain to."
)
@click.option("--socket-group", metavar="GROUP", help="Group owning the unix sockets (mode 0660).")
@click.option(
    "--tenant",
    metavar="NAME",
    help="Tenant of the listeners given here (default: each listener is a tenant of its own).",
)
@click.option(
    "--tenant-from-cn",
    is_flag=True,
    help="Each client of a mutual-TLS listener is the tenant its certificate's CN names.",
)
@click.option(
    "--no-tenancy",
    is_flag=True,
    help="No tenancy on these listeners: their clients see and touch each other's things.",
)
@click.option(
    "--state-db",
    type=click.Path(path_type=Path),
    default=DEFAULT_STATE_DB,
    show_default=True,
    help="Tenancy: the ownership database of jobs.",
)
@click.option(
    "--control-socket",
    type=click.Path(path_type=Path),
    default=DEFAULT_CONTROL,
    show_default=True,
    help="Tenancy: the root-only socket `dockmoat job` talks to.",
)
@click.option(
    "--jobs-dir",
    type=click.Path(path_type=Path),
    default=DEFAULT_JOBS_DIR,
    show_default=True,
    help="Tenancy: where job sockets are created.",
)
@click.option(
    "--job-open-socket",
    type=click.Path(path_type=Path),
    default=None,
    help="Tenancy: a socket where runner pods open their own job with their CI job's "
    "identity token (POST /jobs, Authorization: Bearer JWT; docs/scale-out.md). Job "
    "sockets are made in its folder under random names. Needs --job-identity.",
)
@click.option(
    "--job-identity",
    "job_identities",
    multiple=True,
    metavar="ISSUER=JWKS_FILE",
    help="An issuer whose job tokens open jobs (GitLab's URL, "
    "https://token.actions.githubusercontent.com) and its key set; repeatable.",
)
@click.option(
    "--job-identity-audience",
    metavar="AUD",
    default=None,
    help="The audience (aud) job tokens must carry, e.g. dockmoat://NODE-POOL.",
)
@click.option(
    "--idle-timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Close keep-alive connections idle between requests this long (default 120).",
)
@click.option(
    "--private-network-port",
    type=int,
    default=None,
    envvar="DOCKMOAT_PRIVATE_NETWORK_PORT",
    metavar="PORT",
    help="Opt-in for a private container network: also listen in plain TCP on PORT at each "
    "private address of this network namespace (refused in a host's namespace). Anything on "
    "that network can use the API, under the policy. Env: DOCKMOAT_PRIVATE_NETWORK_PORT.",
)
@click.option(
    "--mode",
    type=click.Choice(["enforce", "warn"]),
    default=None,
    help="warn: requests the policy would deny are forwarded and audited as would_deny "
    "(for roll-out; default enforce).",
)
@click.option("--warn", "warn", is_flag=True, help="Same as --mode warn.")
@click.option(
    "--policy-overrides-profile",
    "policy_overrides_profile",
    is_flag=True,
    help="Let the policy file's `extends` win over an explicit --profile.",
)
@click.option(
    "--metrics-listen",
    metavar="URL",
    default=None,
    envvar="DOCKMOAT_METRICS_LISTEN",
    help="Prometheus /metrics and /ready on tcp://HOST:PORT or unix:///path (off by default).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def command(
    listen: Sequence[str],
    upstream: str | None,
    policy_file: Path | None,
    profile: str,
    allow_bind: Sequence[Path],
    bind_pins: str,
    pin_dir: Path,
    audit_log: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    socket_group: str | None,
    tenant: str | None,
    tenant_from_cn: bool,
    no_tenancy: bool,
    state_db: Path,
    control_socket: Path,
    jobs_dir: Path,
    job_open_socket: Path | None,
    job_identities: tuple[str, ...],
    job_identity_audience: str | None,
    idle_timeout: float | None,
    private_network_port: int | None,
    mode: str | None,
    warn: bool,
    policy_overrides_profile: bool,
    metrics_listen: str | None,
    log_level: str,
) -> None:
    """Serve the guarded Docker API socket."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = build_settings(
        listen=listen,
        upstream=upstream,
        profile=profile,
        policy_file=policy_file,
        allow_bind=allow_bind,
        audit_log=audit_log,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        socket_group=socket_group,
        log_level=log_level,
        tenant=tenant,
        idle_timeout=idle_timeout,
        tenant_from_cn=tenant_from_cn,
        no_tenancy=no_tenancy,
        bind_pins=bind_pins,
        pin_dir=pin_dir,
        private_listen=_private_listen(private_network_port),
        mode="warn" if warn or mode == "warn" else "enforce",
        metrics_listen=metrics_listen,
        profile_given=click.get_current_context().get_parameter_source("profile")
        is not click.core.ParameterSource.DEFAULT,
        policy_overrides_profile=policy_overrides_profile,
    )
    for folder in allow_bind:
        warning = mount_flags_warning(folder)
        if warning:
            logging.getLogger("dockmoat.serve").warning("--allow-bind %s is %s", folder, warning)
    job_open = JobOpenSettings.parse(job_open_socket, job_identities, job_identity_audience)
    run(
        settings,
        TenancySettings(
            state_db=state_db, control=control_socket, jobs_dir=jobs_dir, job_open=job_open
        ),
    )
