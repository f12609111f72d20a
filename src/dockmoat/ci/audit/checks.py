"""The checks, run on the format-neutral containers of one file (or one CI job)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from dockmoat.ci.audit import rules
from dockmoat.ci.audit.dockerargs import ShellFacts
from dockmoat.ci.audit.exposure import (
    buildkit_args_hits,
    command_hits,
    published_port_hit,
    setting_hit,
    tls_configured,
)
from dockmoat.ci.audit.findings import Hit, Severity
from dockmoat.ci.audit.images import Role, parse_image, resolve, unpinned_reason
from dockmoat.ci.audit.model import Container, Located
from dockmoat.ci.audit.mounts import DIND_DATA_DIRS, socket_exposure

_FALSY = frozenset({"", "0", "false", "no", "off"})
_TCP_HOST = re.compile(r"^(?:tcp|http)://\[?([^\]/:]*)\]?(?::(\d+))?", re.IGNORECASE)


def truthy(value: str | None) -> bool:
    return value is not None and value.strip().strip("'\"").lower() not in _FALSY


def tcp_host(url: str) -> tuple[str, int | None] | None:
    """(host, port) of a tcp:// or http:// URL, else None."""
    match = _TCP_HOST.match(url.strip().strip("'\""))
    if match is None:
        return None
    port = int(match.group(2)) if match.group(2) else None
    return match.group(1), port


def check_containers(
    containers: list[Container], local_images: frozenset[str] = frozenset()
) -> Iterator[Hit]:
    """`local_images`: images built in this file (compose `build:`, `docker build -t`)."""
    by_host = {c.hostname: c for c in containers if c.hostname}
    built = local_images | {c.image.value for c in containers if c.builds and c.image}
    proxies = frozenset(h for h, o in by_host.items() if o.role in (Role.PROXY, Role.GUARD))
    for container in containers:
        yield from _check_one(container, by_host, built, proxies)
    yield from _check_shared_data(containers)


def _check_one(
    c: Container,
    by_host: dict[str, Container],
    local_images: frozenset[str] = frozenset(),
    proxies: frozenset[str] = frozenset(),
) -> Iterator[Hit]:
    role = c.role
    if c.image is not None and c.check_image and not c.builds:
        resolved = resolve(c.image.value, c.image_vars)
        reason = unpinned_reason(c.image.value, c.image_vars)
        if reason and resolved not in local_images and c.image.value not in local_images:
            yield Hit(rules.UNPINNED_IMAGE, c.image.line, f"{c.label}: {reason}")
    if role not in (Role.PROXY, Role.GUARD):
        for mount in c.mounts:
            exposure = socket_exposure(mount)
            if exposure:
                ro = " (read-only does not help)" if mount.read_only else ""
                yield Hit(rules.SOCKET_MOUNT, mount.line, f"{c.label}: {exposure}{ro}")
    if c.privileged_line is not None:
        yield _privileged(c, role, c.privileged_line)
    if role is Role.DIND:
        yield from _dind_tls(c)
        if c.limits is not None:
            missing = [k for k in ("memory", "cpus", "pids") if k not in c.limits]
            if missing:
                yield Hit(
                    rules.DIND_NO_LIMITS,
                    c.line,
                    f"{c.label}: DinD daemon without {', '.join(missing)} limit(s)",
                )
        if c.health is False:
            yield Hit(
                rules.DIND_NO_HEALTHCHECK,
                c.line,
                f"{c.label}: DinD daemon without a health check; clients cannot wait for it",
            )
    if role is Role.PROXY:
        yield from _proxy_access(c)
    if role is Role.GUARD:
        words = " ".join(c.command)
        if re.search(r"--profile[= ]permissive\b", words):
            yield Hit(
                rules.PROXY_WRITE_ACCESS,
                c.command_line or c.line,
                f"{c.label}: dockmoat serve with the permissive profile forwards every request",
            )
    if c.network is not None and c.network.value.strip().lower() == "host":
        yield Hit(rules.HOST_NETWORK, c.network.line, f"{c.label}: uses the host network")
    if c.pid is not None and c.pid.value.strip().lower() == "host":
        yield Hit(rules.HOST_PID, c.pid.line, f"{c.label}: uses the host PID namespace")
    if c.ipc is not None and c.ipc.value.strip().lower() == "host":
        yield Hit(rules.HOST_IPC, c.ipc.line, f"{c.label}: uses the host IPC namespace")
    yield from _exposures(c, role, proxies)
    yield from _docker_host(c, by_host)
    yield from _depends_on(c, by_host)


def _exposures(c: Container, role: Role, proxies: frozenset[str]) -> Iterator[Hit]:
    """Docker API endpoints in variables and flags, published API ports, BuildKit on TCP."""
    scope = {**c.inherited_env, **c.env}
    tls = tls_configured((k, v.value) for k, v in scope.items())
    for key, value in c.env.items():
        if key != "DOCKER_HOST":
            hit = setting_hit(key, value.value, value.line, c.label, tls, proxies)
            if hit is not None:
                yield hit
    line = c.command_line or c.line
    yield from command_hits(
        c.command,
        line,
        c.label,
        tls,
        daemon_args=role is Role.DIND,
        word_lines=c.command_word_lines,
        proxies=proxies,
    )
    image = parse_image(c.image.value) if c.image else None
    daemon_args = not c.command or c.command[0].startswith("-")
    if image is not None and image.name == "buildkit" and not c.job and daemon_args:
        yield from buildkit_args_hits(c.command, line, c.label)
    for port in c.ports:
        hit = published_port_hit(port.value, port.line, c.label)
        if hit is not None:
            yield hit


def _privileged(c: Container, role: Role, line: int) -> Hit:
    if role in (Role.PROXY, Role.GUARD):
        what = "socket proxy" if role is Role.PROXY else "dockmoat guard"
        return Hit(rules.PROXY_PRIVILEGED, line, f"{c.label}: {what} runs privileged")
    if role is Role.DIND:
        if c.runtime and "sysbox" in c.runtime:
            return Hit(
                rules.PROXY_PRIVILEGED,
                line,
                f"{c.label}: DinD under {c.runtime} runs privileged, which that runtime "
                "makes unnecessary",
            )
        return Hit(rules.DIND_PRIVILEGED, line, f"{c.label}: DinD daemon runs privileged")
    return Hit(rules.PRIVILEGED, line, f"{c.label}: container runs privileged")


def _dind_tls(c: Container) -> Iterator[Hit]:
    certdir = c.var("DOCKER_TLS_CERTDIR")
    if certdir is not None and not certdir.value.strip().strip("'\""):
        yield Hit(
            rules.DIND_TLS_DISABLED,
            certdir.line,
            f"{c.label}: DOCKER_TLS_CERTDIR is empty, so the daemon listens without TLS",
        )
    yield from daemon_args_tls(c.command, c.command_line or c.line, c.label)


def daemon_args_tls(words: list[str], line: int, label: str) -> Iterator[Hit]:
    """`dockerd` arguments that switch TLS off or listen on a plain TCP port."""
    for i, word in enumerate(words):
        flag, _, value = word.partition("=")
        if flag == "--tls" and value.lower() == "false":
            yield Hit(rules.DIND_TLS_DISABLED, line, f"{label}: daemon started with --tls=false")
        elif flag in ("-H", "--host"):
            target = value or (words[i + 1] if i + 1 < len(words) else "")
            parsed = tcp_host(target)
            if parsed is not None and parsed[1] == 2375 and "--tlsverify" not in words:
                yield Hit(
                    rules.DIND_TLS_DISABLED,
                    line,
                    f"{label}: daemon listens on {target} without TLS",
                )


def _proxy_access(c: Container) -> Iterator[Hit]:
    post = c.env.get("POST")
    containers = c.env.get("CONTAINERS")
    execute = c.env.get("EXEC")
    if post and containers and truthy(post.value) and truthy(containers.value):
        yield Hit(
            rules.PROXY_WRITE_ACCESS,
            post.line,
            f"{c.label}: POST=1 with CONTAINERS=1 lets clients create any container, "
            "privileged or mounting /, through a URL-only filter",
        )
    if execute and truthy(execute.value):
        yield Hit(
            rules.PROXY_WRITE_ACCESS,
            execute.line,
            f"{c.label}: EXEC=1 lets clients run commands in any container",
        )


def verify_on(env: Iterable[dict[str, Located]]) -> bool:
    for scope in env:
        value = scope.get("DOCKER_TLS_VERIFY")
        if value is not None:
            return truthy(value.value)
    return False


def _docker_host(c: Container, by_host: dict[str, Container]) -> Iterator[Hit]:
    host = c.var("DOCKER_HOST")
    if host is None:
        return
    parsed = tcp_host(host.value)
    if parsed is None or verify_on([c.env, c.inherited_env]) or _entrypoint_verifies(c, parsed):
        return
    yield docker_host_hit(host, parsed[0], by_host, c.label)


def _entrypoint_verifies(c: Container, parsed: tuple[str, int | None]) -> bool:
    """The docker image's entrypoint turns TLS verification on by itself.

    With DOCKER_HOST=tcp://...:2376, DOCKER_TLS_CERTDIR naming a directory and
    DOCKER_TLS_VERIFY unset, the official image's docker-entrypoint.sh exports
    DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH=$DOCKER_TLS_CERTDIR/client: GitLab's own
    documented DinD set-up. Only where that entrypoint runs (not GitHub or Jenkins
    job containers, which replace it) and on the docker image (or the default one).
    """
    if parsed[1] != 2376 or not c.image_entrypoint or c.var("DOCKER_TLS_VERIFY") is not None:
        return False
    if c.image is not None and parse_image(c.image.value).name != "docker":
        return False
    certdir = c.var("DOCKER_TLS_CERTDIR")
    return certdir is not None and bool(certdir.value.strip().strip("'\""))


def docker_host_hit(host: Located, hostname: str, by_host: dict[str, Container], label: str) -> Hit:
    target = by_host.get(hostname)
    # A URL-only proxy speaks plain HTTP by design; what it allows is judged on the proxy.
    severity = Severity.MEDIUM if target and target.role in (Role.PROXY, Role.GUARD) else None
    return Hit(
        rules.DOCKER_HOST_NO_TLS,
        host.line,
        f"{label}: DOCKER_HOST={host.value.strip()} without TLS verification",
        severity=severity,
    )


def _depends_on(c: Container, by_host: dict[str, Container]) -> Iterator[Hit]:
    if c.depends_on is None:
        return
    for target, condition in c.depends_on.items():
        other = by_host.get(target)
        if other is not None and other.role is Role.DIND and condition.value != "service_healthy":
            yield Hit(
                rules.DEPENDS_ON_NOT_HEALTHY,
                condition.line,
                f"{c.label}: depends_on {target!r} without condition: service_healthy",
            )
    host = c.var("DOCKER_HOST")
    parsed = tcp_host(host.value) if host else None
    if host is not None and parsed is not None and parsed[0] not in c.depends_on:
        other = by_host.get(parsed[0])
        if other is not None and other.role is Role.DIND:
            yield Hit(
                rules.DEPENDS_ON_NOT_HEALTHY,
                host.line,
                f"{c.label}: uses the DinD daemon {parsed[0]!r} but does not wait for it "
                "(no depends_on)",
            )


def _check_shared_data(containers: list[Container]) -> Iterator[Hit]:
    # The first DinD daemon mounting a volume as its data directory owns it; every
    # other container mounting that volume shares it.
    owners: dict[str, Container] = {}
    for c in containers:
        if c.role is Role.DIND:
            for mount in c.mounts:
                if mount.source and mount.target.rstrip("/") in DIND_DATA_DIRS:
                    owners.setdefault(mount.source, c)
    for c in containers:
        for mount in c.mounts:
            owner = owners.get(mount.source or "")
            if owner is not None and owner is not c:
                yield Hit(
                    rules.DIND_SHARED_DATA,
                    mount.line,
                    f"{c.label}: mounts {mount.source!r}, the data volume of the DinD "
                    f"daemon {owner.label}",
                )


def check_shell(
    facts: ShellFacts,
    line: int,
    label: str,
    env_scopes: list[dict[str, Located]],
) -> Iterator[Hit]:
    """Findings in one shell line: docker run flags, dockerd flags, DOCKER_HOST exports,
    Docker endpoints in any variable or flag, socat, chmod and buildkitd."""
    scope_items = [(k, v.value) for scope in env_scopes for k, v in scope.items()]
    tls = tls_configured([*facts.exported.items(), *scope_items])
    for words in facts.commands:
        yield from command_hits(words, line, label, tls)
    for key, value in facts.exported.items():
        if key != "DOCKER_HOST":
            hit = setting_hit(key, value, line, label, tls)
            if hit is not None:
                yield hit
    for call in facts.docker_calls:
        if (
            call.host
            and tcp_host(call.host)
            and not call.tls_verify
            and not verify_on(
                [{k: Located(v, line) for k, v in facts.exported.items()}, *env_scopes]
            )
        ):
            yield Hit(
                rules.DOCKER_HOST_NO_TLS,
                line,
                f"{label}: docker -H {call.host} without --tlsverify",
            )
        if call.run is None:
            continue
        run = call.run
        container = Container(
            label=f"{label} (docker {' '.join(call.subcommand)})",
            line=line,
            image=Located(run.image, line) if run.image else None,
            command=run.command,
            command_line=line,
            privileged_line=line if run.privileged else None,
            runtime=run.runtime,
            env={k: Located(v, line) for k, v in run.env.items() if v is not None},
            mounts=run.mounts,
            network=Located(run.network, line) if run.network else None,
            pid=Located(run.pid, line) if run.pid else None,
            ipc=Located(run.ipc, line) if run.ipc else None,
            ports=[Located(p, line) for p in run.ports],
            limits=_limits(run.memory, run.cpus, run.pids),
            health=run.health,
            # Images run by scripts are usually the ones just built: judging their tags is noise.
            check_image=False,
        )
        yield from _check_one(container, {})
    for words in facts.dockerd_words:
        yield from daemon_args_tls(words, line, f"{label} (dockerd)")
    exported_host = facts.exported.get("DOCKER_HOST")
    if exported_host is not None:
        parsed = tcp_host(exported_host)
        exported = {k: Located(v, line) for k, v in facts.exported.items()}
        if parsed is not None and not verify_on([exported, *env_scopes]):
            yield docker_host_hit(Located(exported_host, line), parsed[0], {}, label)


def _limits(memory: bool, cpus: bool, pids: bool) -> set[str]:
    return {
        name for name, present in (("memory", memory), ("cpus", cpus), ("pids", pids)) if present
    }
