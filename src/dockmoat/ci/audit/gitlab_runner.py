"""GitLab Runner's `config.toml`: what each `[[runners]]` entry grants its jobs.

Docker executor (`[runners.docker]`): `privileged`, `services_privileged`,
`allowed_privileged_services`, `allowed_privileged_images`, `volumes` (a socket mount
reaches every job), `network_mode`, `host` (the runner's own daemon endpoint) with
`tls_verify`/`tls_cert_path`. Kubernetes executor (`[runners.kubernetes]`):
`privileged`, `[[runners.kubernetes.volumes.host_path]]`, `cpu_limit`, `memory_limit`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from typing import Any

from dockmoat.ci.audit import rules
from dockmoat.ci.audit.checks import tcp_host
from dockmoat.ci.audit.findings import Hit, Severity
from dockmoat.ci.audit.mounts import Mount, parse_short, socket_exposure
from dockmoat.ci.audit.runnerctx import RunnerGrant
from dockmoat.ci.audit.tomllines import Table, key_line, runner_tables
from dockmoat.errors import ConfigError


def looks_like(text: str) -> bool:
    return any(line.strip().startswith("[[runners]]") for line in text.splitlines())


def load(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"not valid TOML: {str(error).splitlines()[0]}") from error


def grants(text: str, file: str) -> list[RunnerGrant]:
    """What each runner grants in privileged mode (for judging `.gitlab-ci.yml` with it)."""
    out: list[RunnerGrant] = []
    for index, (runner, group) in enumerate(_runners(load(text), text)):
        name = str(runner.get("name") or f"#{index + 1}")
        section = _table(runner, "docker") or _table(runner, "kubernetes")
        jobs = section.get("privileged") is True
        services = section.get("services_privileged")
        allowed = section.get("allowed_privileged_services")
        out.append(
            RunnerGrant(
                file=file,
                line=group[0].line,
                name=repr(name),
                jobs_privileged=jobs,
                # `services_privileged` overrides `privileged` for services.
                services_privileged=services if isinstance(services, bool) else jobs,
                allowed_services=(
                    tuple(str(p) for p in allowed) if isinstance(allowed, list) else ()
                ),
            )
        )
    return out


def analyse(text: str) -> Iterator[Hit]:
    for index, (runner, group) in enumerate(_runners(load(text), text)):
        label = f"runner {str(runner.get('name') or f'#{index + 1}')!r}"
        yield from _docker(_table(runner, "docker"), group, label)
        yield from _kubernetes(_table(runner, "kubernetes"), group, label)


def _runners(doc: dict[str, Any], text: str) -> list[tuple[dict[str, Any], list[Table]]]:
    entries = doc.get("runners")
    if not isinstance(entries, list):
        return []
    groups = runner_tables(text)
    return [
        (entry, groups[i] if i < len(groups) else [Table("runners", 1)])
        for i, entry in enumerate(entries)
        if isinstance(entry, dict)
    ]


def _table(runner: dict[str, Any], name: str) -> dict[str, Any]:
    value = runner.get(name)
    return value if isinstance(value, dict) else {}


def _docker(docker: dict[str, Any], group: list[Table], label: str) -> Iterator[Hit]:
    if not docker:
        return
    table = "runners.docker"
    if docker.get("privileged") is True:
        allowed = docker.get("allowed_privileged_images")
        yield Hit(
            rules.RUNNER_PRIVILEGED,
            key_line(group, table, "privileged"),
            f"{label}: privileged = true makes every job container and service privileged"
            + (" (only the allowed_privileged_images)" if allowed else ""),
            severity=Severity.MEDIUM if allowed else None,
        )
    elif docker.get("services_privileged") is True:
        allowed = docker.get("allowed_privileged_services")
        yield Hit(
            rules.RUNNER_PRIVILEGED,
            key_line(group, table, "services_privileged"),
            f"{label}: services_privileged = true "
            + (
                "runs the allowed_privileged_services privileged (a job can still "
                "override their entrypoint)"
                if allowed
                else "without allowed_privileged_services runs any service image privileged"
            ),
            severity=Severity.MEDIUM if allowed else None,
        )
    volumes = docker.get("volumes")
    if isinstance(volumes, list):
        line = key_line(group, table, "volumes")
        for spec in volumes:
            if isinstance(spec, str):
                exposure = socket_exposure(parse_short(spec, line))
                if exposure:
                    yield Hit(rules.SOCKET_MOUNT, line, f"{label} (every job): {exposure}")
    if str(docker.get("network_mode", "")).lower() == "host":
        yield Hit(
            rules.HOST_NETWORK,
            key_line(group, table, "network_mode"),
            f"{label}: every job container uses the host network",
        )
    host = docker.get("host")
    verified = docker.get("tls_verify") is True or bool(docker.get("tls_cert_path"))
    if isinstance(host, str) and tcp_host(host) and not verified:
        yield Hit(
            rules.DOCKER_HOST_NO_TLS,
            key_line(group, table, "host"),
            f"{label}: host = {host} without tls_verify: the runner drives that daemon "
            "unauthenticated",
        )


def _kubernetes(kube: dict[str, Any], group: list[Table], label: str) -> Iterator[Hit]:
    if not kube:
        return
    table = "runners.kubernetes"
    if kube.get("privileged") is True:
        yield Hit(
            rules.RUNNER_PRIVILEGED,
            key_line(group, table, "privileged"),
            f"{label}: privileged = true makes every job pod's containers privileged",
        )
    volumes = _table(kube, "volumes")
    host_paths = volumes.get("host_path")
    if isinstance(host_paths, list):
        headers = [t for t in group if t.name == "runners.kubernetes.volumes.host_path"]
        for i, entry in enumerate(host_paths):
            if not isinstance(entry, dict):
                continue
            header = headers[i] if i < len(headers) else None
            line = header.keys.get("host_path", header.line) if header else group[0].line
            mount = Mount(
                source=str(entry.get("host_path", "")),
                target=str(entry.get("mount_path", "")),
                read_only=entry.get("read_only") is True,
                line=line,
            )
            exposure = socket_exposure(mount)
            if exposure:
                yield Hit(rules.SOCKET_MOUNT, line, f"{label} (every job pod): {exposure}")
    missing = [k for k in ("memory_limit", "cpu_limit") if not kube.get(k)]
    if missing:
        yield Hit(
            rules.POD_NO_LIMITS,
            key_line(group, table, missing[0]),
            f"{label}: job pods without {' or '.join(missing)}",
        )
