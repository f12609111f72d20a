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


def is_templated(reference: str) -> bool:
    """References built from CI variables cannot be judged statically."""
    return "$" in reference or "{{" in reference


def unpinned_reason(reference: str) -> str | None:
    """Why `reference` is not pinned, or None when it is (or cannot be judged)."""
    if not reference.strip() or is_templated(reference):
        return None
    image = parse_image(reference)
    if image.digest:
        return None
    if image.tag is None:
        return f"image {reference!r} has no tag, so it means :latest"
    if image.tag.lower() == "latest":
        return f"image {reference!r} uses the moving tag :latest"
    # A tag without any version number (dind, stable, edge, cli) is a channel, not a pin.
    if not _DIGIT.search(image.tag):
        return f"image {reference!r} uses the moving tag :{image.tag}, not a version"
    return None


class Role(StrEnum):
    DIND = "dind"
    PROXY = "proxy"  # Tecnativa-style URL-filtering socket proxy
    GUARD = "guard"  # dockmoat serve
    OTHER = "other"


_DAEMON_COMMANDS = ("dockerd", "dockerd-entrypoint.sh", "dockerd-rootless.sh")


def classify(image: str | None, command: list[str]) -> Role:
    """What a container is, from its image and the words of its entrypoint + command."""
    words = [w.rsplit("/", 1)[-1] for w in command]
    if image is not None:
        ref = parse_image(image)
        if "socket-proxy" in ref.name:
            return Role.PROXY
        if ref.name == "dockmoat" and (not command or "serve" in command):
            return Role.GUARD
        if "dind" in ref.name or (ref.tag is not None and "dind" in ref.tag.lower()):
            return Role.DIND
    if "dockmoat" in words and "serve" in words:
        return Role.GUARD
    if words and words[0] in _DAEMON_COMMANDS:
        return Role.DIND
    return Role.OTHER
