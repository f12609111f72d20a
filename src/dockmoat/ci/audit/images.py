"""Image references: are they pinned, and what kind of container do they make?"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class ImageRef:
    repository: str  # without registry port confusion: everything before the tag
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """The last path component of the repository (`docker`, `docker-socket-proxy`)."""
        return self.repository.rsplit("/", 1)[-1].lower()


def parse_image(reference: str) -> ImageRef:
    ref = reference.strip()
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    # A ':' after the last '/' is a tag; one before it is a registry port.
    last = ref.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        ref, tag = ref.rsplit(":", 1)
    return ImageRef(repository=ref, tag=tag, digest=digest)


_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-=])([^}]*))?\}|\$(\w+)")


def resolve(reference: str, variables: dict[str, str]) -> str | None:
    """`reference` with `${VAR}`, `$VAR` and `${VAR:-default}` filled in, else None.

    A variable set in `variables` (the same file's) wins; an unset one takes its
    default; one with neither cannot be judged statically, nor can `${{ ... }}`.
    """
    if "{{" in reference:
        return None
    text = reference
    for _ in range(4):  # variables that refer to variables, a few levels deep
        if "$" not in text:
            return text
        unresolved = False

        def fill(match: re.Match[str]) -> str:
            nonlocal unresolved
            name = match.group(1) or match.group(4)
            if name in variables:
                return variables[name]
            if match.group(2) is not None:
                return match.group(3) or ""
            unresolved = True
            return match.group(0)

        text = _VARIABLE.sub(fill, text)
        if unresolved:
            return None
    return None if "$" in text else text


def unpinned_reason(reference: str, variables: dict[str, str] | None = None) -> str | None:
    """Why `reference` is not pinned, or None when it is (or cannot be judged)."""
    resolved = resolve(reference, variables or {})
    if resolved is None:
        return _literal_tag_reason(reference)
    if not resolved.strip():
        return None
    shown = repr(reference) if resolved == reference else f"{reference!r} (= {resolved!r})"
    image = parse_image(resolved)
    if image.digest:
        return None
    if image.tag is None:
        return f"image {shown} has no tag, so it means :latest"
    if image.tag.lower() == "latest":
        return f"image {shown} uses the moving tag :latest"
    # A tag without any version number (dind, stable, edge, cli) is a channel, not a pin.
    if not _DIGIT.search(image.tag):
        return f"image {shown} uses the moving tag :{image.tag}, not a version"
    return None


def _literal_tag_reason(reference: str) -> str | None:
    """`$REGISTRY/tools/builder:latest`: the registry is a variable, the tag is not."""
    last = reference.rsplit("/", 1)[-1]
    if "/" not in reference or "$" in last or "{{" in reference or ":" not in last:
        return None
    if "@" in last:
        return None
    tag = last.rsplit(":", 1)[1]
    if tag.lower() == "latest":
        return f"image {reference!r} uses the moving tag :latest"
    if tag and not _DIGIT.search(tag):
        return f"image {reference!r} uses the moving tag :{tag}, not a version"
    return None


class Role(StrEnum):
    DIND = "dind"
    PROXY = "proxy"  # Tecnativa-style URL-filtering socket proxy
    GUARD = "guard"  # dockmoat serve
    OTHER = "other"


_DAEMON_COMMANDS = ("dockerd", "dockerd-entrypoint.sh", "dockerd-rootless.sh")
# Socket proxies known by their image: they forward a mounted socket, filtered by URL.
_PROXY_IMAGES = (
    "tecnativa/docker-socket-proxy",
    "linuxserver/socket-proxy",
    "wollomatic/socket-proxy",
    "11notes/socket-proxy",
)
# Tecnativa-style switches (HAProxy-based proxies, whatever their image is called).
PROXY_SWITCHES = frozenset(
    {"CONTAINERS", "POST", "EXEC", "IMAGES", "NETWORKS", "VOLUMES", "SERVICES", "TASKS",
     "INFO", "PING", "VERSION", "EVENTS", "AUTH", "BUILD", "COMMIT", "SECRETS", "CONFIGS",
     "NODES", "PLUGINS", "SWARM", "SYSTEM", "DISTRIBUTION", "SESSION", "GRPC",
     "ALLOW_START", "ALLOW_STOP", "ALLOW_RESTARTS"}
)  # fmt: skip
# wollomatic/socket-proxy's own flags.
_PROXY_FLAGS = ("-allowget", "-allowpost", "-allowfrom", "-allowhead", "-proxysocketendpoint")


def is_dind_image(image: str) -> bool:
    ref = parse_image(image)
    return "dind" in ref.name or (ref.tag is not None and "dind" in ref.tag.lower())


def _is_proxy(image: str | None, command: list[str], env_keys: frozenset[str]) -> bool:
    if image is not None:
        repository = parse_image(image).repository.lower()
        if any(repository == p or repository.endswith("/" + p) for p in _PROXY_IMAGES):
            return True
    if len(env_keys & PROXY_SWITCHES) >= 2:
        return True
    return any(w.lower().split("=", 1)[0] in _PROXY_FLAGS for w in command)


def classify(
    image: str | None,
    command: list[str],
    env_keys: frozenset[str] = frozenset(),
    *,
    job: bool = False,
) -> Role:
    """What a container is, from its image, entrypoint + command words and environment.

    `job`: the CI system replaces the image's command with the job's shell (GitLab and
    GitHub job images, Jenkins agents and `.inside`), so the image's daemon never runs.
    """
    words = [w if w.startswith("-") else w.rsplit("/", 1)[-1] for w in command]
    first = words[0] if words else None
    if "dockmoat" in words and "serve" in words:
        return Role.GUARD
    if job:
        return Role.OTHER
    dockmoat_image = image is not None and parse_image(image).name == "dockmoat"
    if dockmoat_image and (not command or "serve" in command):
        return Role.GUARD
    if first in _DAEMON_COMMANDS:
        return Role.DIND
    if _is_proxy(image, command, env_keys):
        return Role.PROXY
    # The official DinD image's entrypoint starts dockerd when the command is empty or
    # flags; any other command (`sh`, `docker info`) runs instead of the daemon. Other
    # DinD images (ubuntu-dind and the like) start their daemon whatever the command.
    if image is not None and is_dind_image(image):
        official = parse_image(image).name == "docker"
        if not official or first is None or first.startswith("-"):
            return Role.DIND
    return Role.OTHER
