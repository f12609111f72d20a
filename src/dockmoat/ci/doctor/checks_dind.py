"""Pure checks on a DinD container: privileges, state, known log lines, storage and MTU."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockmoat.ci.doctor.facts import DindFacts
from dockmoat.ci.doctor.model import Finding, fail, ok, warn
from dockmoat.netinfo import default_route_iface

CONTAINER = "dind.container"
PRIVILEGES = "dind.privileges"
LOGS = "dind.logs"
STORAGE = "dind.storage"
MTU = "dind.mtu"

# Runtimes that nest a daemon without --privileged.
NESTING_RUNTIMES = ("sysbox-runc", "sysbox")
NESTED_BRIDGE = "docker0"


@dataclass(frozen=True, slots=True)
class LogPattern:
    label: str
    regex: re.Pattern[str]
    fix: str


def _p(label: str, pattern: str, fix: str) -> LogPattern:
    return LogPattern(label, re.compile(pattern, re.IGNORECASE), fix)


_PRIVILEGED_FIX = (
    "start the DinD container with `--privileged` (compose: `privileged: true`), or with a "
    "runtime that nests without it (`--runtime=sysbox-runc`)"
)
# First match wins per line: specific causes before the generic permission one.
LOG_PATTERNS: tuple[LogPattern, ...] = (
    _p(
        "iptables",
        r"iptables|ip6tables|nf_tables|failed to create NAT chain",
        "the nested daemon cannot program iptables: run it privileged (it needs NET_ADMIN and "
        "the host's netfilter modules: `modprobe ip_tables iptable_nat`), or match the host's "
        "backend (iptables-legacy vs nft)",
    ),
    _p(
        "storage driver",
        r"graphdriver|driver not supported|is not supported over|backing file ?system is "
        r"unsupported|failed to mount overlay|storage.driver",
        "mount a volume at /var/lib/docker (`-v dind-data:/var/lib/docker`) so overlay2 does not "
        "sit on overlayfs, or pass `--storage-driver` explicitly",
    ),
    _p(
        "TLS",
        r"x509:|tls: |certificate|could not read ca|no such file.*\.pem",
        "give the daemon its certificates: DOCKER_TLS_CERTDIR=/certs with a volume for "
        "/certs/ca and /certs/client (the client mounts only /certs/client, read-only)",
    ),
    _p(
        "port in use",
        r"address already in use",
        "another daemon or process holds the port or socket: stop it or use another port",
    ),
    _p(
        "privileges",
        r"operation not permitted|permission denied|are you root|must be root|could not mount "
        r"/sys|devices cgroup isn't mounted",
        _PRIVILEGED_FIX,
    ),
)
MAX_LOG_QUOTE = 200


def check_container(facts: DindFacts) -> Finding:
    if not facts.found:
        return fail(
            CONTAINER,
            f"no container named {facts.name} on this engine",
            "check the name with `docker ps -a` (CI services are often called `docker` or `dind`)",
        )
    if facts.running:
        return ok(CONTAINER, f"{facts.name} is running")
    return fail(
        CONTAINER,
        f"{facts.name} is not running ({facts.status}, exit code {facts.exit_code})",
        "the nested daemon died: see dind.logs for the cause, then `docker start` it "
        "or recreate it",
    )


def check_privileges(facts: DindFacts) -> Finding:
    if facts.privileged:
        return ok(
            PRIVILEGES,
            f"{facts.name} is privileged (needed by dockerd; it also grants full host access, "
            "so keep such hosts dedicated to CI)",
        )
    if any(facts.runtime.startswith(r) for r in NESTING_RUNTIMES):
        return ok(
            PRIVILEGES, f"{facts.name} runs under {facts.runtime}, which nests without --privileged"
        )
    return fail(
        PRIVILEGES,
        f"{facts.name} is not privileged and its runtime ({facts.runtime or 'default'}) does not "
        "nest: dockerd cannot mount, set up cgroups or program iptables",
        _PRIVILEGED_FIX,
    )


def _weight(line: str) -> int:
    """How telling a log line is: the fatal one beats errors, errors beat chatter."""
    lowered = line.lower()
    if "failed to start daemon" in lowered or "level=fatal" in lowered:
        return 3
    if "level=error" in lowered:
        return 2
    return 1 if "level=" in lowered else 2


def _strip_time(line: str) -> str:
    return re.sub(r'^time="[^"]*"\s*', "", line.strip())


def _chatter(line: str) -> bool:
    """Info and debug lines mention drivers and certificates all the time without failing."""
    lowered = line.lower()
    return ("level=info" in lowered or "level=debug" in lowered) and (
        "failed to start daemon" not in lowered
    )


def scan_logs(logs: str) -> list[tuple[LogPattern, str]]:
    """The most telling log line matched by each known failure pattern, in pattern order."""
    found: dict[str, tuple[int, LogPattern, str]] = {}
    for line in logs.splitlines():
        if _chatter(line):
            continue
        for pattern in LOG_PATTERNS:
            if pattern.regex.search(line):
                weight = _weight(line)
                if pattern.label not in found or weight > found[pattern.label][0]:
                    found[pattern.label] = (weight, pattern, _strip_time(line))
                break
    return [(found[p.label][1], found[p.label][2]) for p in LOG_PATTERNS if p.label in found]


def check_logs(facts: DindFacts) -> list[Finding]:
    matches = scan_logs(facts.logs)
    if not matches:
        return [ok(LOGS, f"no known failure lines in the logs of {facts.name}")]
    findings = []
    for pattern, line in matches:
        quoted = line if len(line) <= MAX_LOG_QUOTE else line[: MAX_LOG_QUOTE - 3] + "..."
        # A running daemon that logged an error once is degraded, not down.
        report = warn if facts.running else fail
        findings.append(report(LOGS, f"{pattern.label}: {quoted}", pattern.fix))
    return findings


def check_storage(facts: DindFacts) -> Finding:
    has_volume = "/var/lib/docker" in facts.mount_points
    driver = facts.nested_driver
    volume_fix = (
        f"mount a volume at /var/lib/docker: `docker run -v {facts.name}-data:/var/lib/docker ...`"
    )
    if driver == "vfs":
        return warn(
            STORAGE,
            "the nested daemon uses vfs (every layer a full copy: slow, disk hungry)"
            + ("" if has_volume else "; its /var/lib/docker is on the container's overlayfs"),
            volume_fix
            if not has_volume
            else "start the nested dockerd with `--storage-driver overlay2`",
        )
    if not has_volume:
        return warn(
            STORAGE,
            "/var/lib/docker of the nested daemon is not a volume: overlay2 on overlayfs does not "
            "work, so the nested daemon falls back to vfs or fails",
            volume_fix,
        )
    return ok(STORAGE, f"/var/lib/docker is a volume; nested storage driver {driver or 'unknown'}")


def parse_mtus(listing: str) -> dict[str, int]:
    """Read "IFACE MTU" lines, or `ip -o link` output, into {iface: mtu}."""
    mtus: dict[str, int] = {}
    for line in listing.splitlines():
        link = re.match(r"^\d+:\s+([^:@\s]+)[^:]*:.*\bmtu\s+(\d+)", line)
        if link:
            mtus[link.group(1)] = int(link.group(2))
            continue
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            mtus[parts[0]] = int(parts[1])
    return mtus


def check_mtu(facts: DindFacts, host_uplink: tuple[str, int] | None) -> Finding | None:
    """The nested bridge must not exceed the path out; else large packets vanish silently."""
    if facts.net_mtus is None:
        if facts.running:
            return warn(
                MTU,
                f"could not list the interfaces of {facts.name} "
                f"({facts.exec_error or 'no output'})",
                f"compare by hand: `docker exec {facts.name} ip link`",
            )
        return None
    mtus = parse_mtus(facts.net_mtus)
    uplink = default_route_iface(facts.routes or "") or ("eth0" if "eth0" in mtus else None)
    bridge = facts.nested_bridge_mtu or mtus.get(NESTED_BRIDGE)
    if bridge is None or uplink is None or uplink not in mtus:
        return warn(
            MTU,
            f"no {NESTED_BRIDGE} bridge or uplink found in {facts.name} "
            f"(interfaces: {', '.join(f'{k}={v}' for k, v in sorted(mtus.items())) or 'none'})",
            "check that the nested daemon started (dind.logs)",
        )
    limit, limit_name = mtus[uplink], f"{facts.name}'s {uplink}"
    # Wider than the container's own link: dropped right there (fail). Wider only than the
    # host's uplink: the host's NAT may still fragment or signal it (warn, like docker0).
    report = fail
    if bridge <= limit and host_uplink is not None and host_uplink[1] < limit:
        limit, limit_name, report = host_uplink[1], f"the host's {host_uplink[0]}", warn
    if bridge > limit:
        return report(
            MTU,
            f"nested {NESTED_BRIDGE} MTU {bridge} > {limit} of {limit_name}: large packets from "
            + (
                "nested containers are dropped (pulls and pushes hang, TLS handshakes stall)"
                if report is fail
                else "nested containers can be dropped where path MTU discovery is blocked"
            ),
            f"start the nested daemon with `--mtu={limit}` "
            f'(docker:dind: `command: ["--mtu={limit}"]`)',
        )
    return ok(MTU, f"nested {NESTED_BRIDGE} MTU {bridge} <= {limit} of {limit_name}")
