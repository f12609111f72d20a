"""Every way a CI file can put the Docker API (or BuildKit's) on the network.

Judged on words, wherever they are: variables, flags, command lines, published ports
and `chmod` calls. A `tcp://` value is a Docker endpoint when it names port 2375
(Docker's plain-TCP port) or when its variable or flag is about Docker
(`DOCKER_*`, `*_REMOTE_HOST`, `--providers.docker.endpoint`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from dockmoat.ci.audit import rules
from dockmoat.ci.audit.findings import Hit, Severity

PLAIN_PORT = 2375
TLS_PORT = 2376
_ENDPOINT = re.compile(r"\b(?:tcp|http)://\[?([^\]\s/:'\"]*)\]?(?::(\d+))?", re.IGNORECASE)
_DOCKERISH_NAME = re.compile(r"docker|remote_host|dockerd|moby", re.IGNORECASE)
_FALSY = frozenset({"", "0", "false", "no", "off"})
_SOCAT_LISTEN = re.compile(r"^(?:TCP|TCP4|TCP6)-LISTEN:(\d+)", re.IGNORECASE)
_SOCKET_PATH = re.compile(r"(?:docker|containerd|podman)\.sock\b")
_WORLD_WRITABLE_OCTAL = re.compile(r"^0?[0-7]?[0-7]{2}[2367]$")
_WORLD_WRITABLE_SYMBOLIC = re.compile(r"(?:^|,)[ugo]*[ao][ugo]*[+=][rwxXst]*w")


def endpoint(value: str) -> tuple[str, int | None] | None:
    """(host, port) of the first tcp:// or http:// URL in `value`."""
    match = _ENDPOINT.search(value)
    if match is None:
        return None
    return match.group(1), int(match.group(2)) if match.group(2) else None


def tls_configured(names_and_values: Iterable[tuple[str, str]]) -> bool:
    """Whether TLS settings stand beside an endpoint (a TLS variable or a certificate path)."""
    for name, value in names_and_values:
        lowered = name.lower()
        if ("tls" in lowered or "cert" in lowered) and value.strip().strip(
            "'\""
        ).lower() not in _FALSY:
            return True
    return False


def setting_hit(
    name: str,
    value: str,
    line: int,
    label: str,
    tls: bool,
    proxies: frozenset[str] = frozenset(),
) -> Hit | None:
    """A variable or flag (`name=value`) that points a client at a plain-TCP Docker API.

    `proxies`: host names of this file's socket proxies and dockmoat guards. A
    URL-filtering proxy speaks plain HTTP by design; what it allows is judged on it,
    so reaching one is medium (as `docker-host-no-tls` to one is).
    """
    found = endpoint(value)
    if found is None or tls:
        return None
    host, port = found
    if port == PLAIN_PORT or (port != TLS_PORT and _DOCKERISH_NAME.search(name)):
        to_proxy = host in proxies
        return Hit(
            rules.DOCKER_API_PLAIN_TCP,
            line,
            f"{label}: {name}={value.strip()} reaches the Docker API over plain TCP"
            + (" (a socket proxy of this file, judged on its own)" if to_proxy else ""),
            severity=Severity.MEDIUM if to_proxy else None,
        )
    return None


_OWN_HOST_FLAG = frozenset({"docker", "dockerd", "dockerd-entrypoint.sh", "dockerd-rootless.sh"})


def command_hits(
    words: list[str],
    line: int,
    label: str,
    tls: bool,
    *,
    daemon_args: bool = False,
    word_lines: list[int] | None = None,
    proxies: frozenset[str] = frozenset(),
) -> Iterator[Hit]:
    """Flags with a Docker endpoint, socat forwarding a socket to TCP, chmod, buildkitd.

    `-H`/`--host` of docker and dockerd (or of `daemon_args`, a DinD container's
    command) are judged by their own rules; any other program's are judged here.
    """
    program = words[0].rsplit("/", 1)[-1] if words else ""
    own_host = daemon_args or program in _OWN_HOST_FLAG
    lines = word_lines if word_lines and len(word_lines) == len(words) else [line] * len(words)
    yield from _flag_endpoints(words, lines, label, tls, own_host, proxies)
    yield from _socat(words, line, label)
    yield from _chmod(words, line, label)
    yield from buildkitd_hits(words, line, label)
    yield from _buildx_remote(words, line, label)


def _flag_endpoints(
    words: list[str],
    lines: list[int],
    label: str,
    tls: bool,
    own_host: bool,
    proxies: frozenset[str],
) -> Iterator[Hit]:
    tls = tls or any("tls" in w.lower() for w in words if w.startswith("-"))
    for i, word in enumerate(words):
        if not word.startswith("-"):
            continue
        flag, sep, value = word.partition("=")
        if not sep:
            value = words[i + 1] if i + 1 < len(words) else ""
        if flag == "--addr" or (own_host and flag in ("-H", "--host")):
            continue  # buildkitd, docker -H and dockerd -H have their own rules
        hit = setting_hit(flag, value, lines[i], label, tls, proxies)
        if hit is not None:
            yield hit


def _socat(words: list[str], line: int, label: str) -> Iterator[Hit]:
    """socat (by program or by its address words, as in an image whose entrypoint it is)."""
    listen = next((m for m in map(_SOCAT_LISTEN.match, words) if m), None)
    unix = any(w.lower().startswith(("unix-connect:", "unix-client:", "unix:")) for w in words)
    if listen is not None and unix and any(_SOCKET_PATH.search(w) for w in words):
        yield Hit(
            rules.DOCKER_API_PLAIN_TCP,
            line,
            f"{label}: socat serves the daemon socket on TCP port {listen.group(1)}, "
            "unauthenticated",
        )


def _chmod(words: list[str], line: int, label: str) -> Iterator[Hit]:
    if not words or words[0].rsplit("/", 1)[-1] != "chmod":
        return
    args = [w for w in words[1:] if not w.startswith("-") or _is_mode(w)]
    if len(args) < 2 or not _is_mode(args[0]):
        return
    for target in args[1:]:
        if _SOCKET_PATH.search(target):
            yield Hit(
                rules.SOCKET_WORLD_WRITABLE,
                line,
                f"{label}: chmod {args[0]} {target} lets every user drive the daemon",
            )


def _is_mode(word: str) -> bool:
    return bool(_WORLD_WRITABLE_OCTAL.match(word) or _WORLD_WRITABLE_SYMBOLIC.search(word))


def buildkitd_hits(words: list[str], line: int, label: str) -> Iterator[Hit]:
    """`buildkitd --addr tcp://...` without its TLS flags (words start at the program)."""
    if not words or words[0].rsplit("/", 1)[-1] not in ("buildkitd", "buildkitd-rootless"):
        return
    yield from buildkit_args_hits(words[1:], line, label)


def buildkit_args_hits(args: list[str], line: int, label: str) -> Iterator[Hit]:
    has_tls = any(a.split("=", 1)[0] in ("--tlscert", "--tlskey", "--tlscacert") for a in args)
    for i, word in enumerate(args):
        flag, sep, value = word.partition("=")
        if flag != "--addr":
            continue
        if not sep:
            value = args[i + 1] if i + 1 < len(args) else ""
        if value.lower().startswith("tcp://") and not has_tls:
            yield Hit(
                rules.BUILDKIT_PLAIN_TCP,
                line,
                f"{label}: buildkitd listens on {value} without TLS",
            )


def _buildx_remote(words: list[str], line: int, label: str) -> Iterator[Hit]:
    """`docker buildx create --driver remote tcp://...` without client certificates."""
    if words[:3] != ["docker", "buildx", "create"]:
        return
    joined = " ".join(words)
    if "--driver remote" not in joined and "--driver=remote" not in joined:
        return
    if "cacert=" in joined:
        return
    for word in words[3:]:
        if word.lower().startswith("tcp://"):
            yield Hit(
                rules.BUILDKIT_PLAIN_TCP,
                line,
                f"{label}: buildx remote builder on {word} without client certificates",
            )


def published_port_hit(spec: str, line: int, label: str) -> Hit | None:
    """A published port (`[IP:]HOST:CONTAINER[/proto]`, `CONTAINER`) of the Docker API."""
    host_ip, container = _split_port(spec)
    for port in (PLAIN_PORT, TLS_PORT):
        if not _in_range(container, port):
            continue
        loopback = host_ip.startswith("127.") or host_ip in ("localhost", "::1", "[::1]")
        severity = Severity.MEDIUM if port == TLS_PORT or loopback else None
        where = f"on {host_ip}" if host_ip else "on every host interface"
        return Hit(
            rules.DOCKER_PORT_PUBLISHED,
            line,
            f"{label}: publishes the Docker API port {port} {where} ({spec.strip()})",
            severity=severity,
        )
    return None


def _split_port(spec: str) -> tuple[str, str]:
    text = spec.strip().strip("'\"").split("/", 1)[0]
    if text.startswith("["):  # [::1]:2375:2375
        close = text.find("]")
        host_ip, rest = text[: close + 1], text[close + 2 :]
        return host_ip, rest.rsplit(":", 1)[-1]
    parts = text.split(":")
    host_ip = parts[0] if len(parts) == 3 else ""
    return host_ip, parts[-1]


def _in_range(text: str, port: int) -> bool:
    low, _, high = text.partition("-")
    try:
        return int(low) <= port <= int(high or low)
    except ValueError:
        return False
