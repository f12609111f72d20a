"""Docker Hub host names mapped to 127.0.0.1, so an accidental pull fails at once."""

from __future__ import annotations

from pathlib import Path

HUB_HOSTS = (
    "registry-1.docker.io",
    "index.docker.io",
    "auth.docker.io",
    "production.cloudflare.docker.com",
    "registry.hub.docker.com",
)
BEGIN = "# BEGIN dockmoat-test: no registry here, pulls must fail fast"
END = "# END dockmoat-test"


def with_block(text: str) -> str:
    """`text` with exactly one up-to-date marked block at the end (idempotent).

    Only complete BEGIN..END blocks are ours; a dangling marker and every other
    line are kept as they are.
    """
    lines = text.splitlines()
    kept: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == BEGIN:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == END), None)
            if end is not None:
                i = end + 1
                continue
        kept.append(lines[i])
        i += 1
    block = [BEGIN, *(f"127.0.0.1 {host}" for host in HUB_HOSTS), END]
    return "\n".join([*kept, *block]) + "\n"


def apply(path: Path = Path("/etc/hosts")) -> bool:
    """Write the block when needed; True if the file changed.

    Rewritten in place, not replaced: /etc/hosts is often a bind mount.
    """
    current = path.read_text()
    wanted = with_block(current)
    if wanted == current:
        return False
    with path.open("r+") as f:
        f.write(wanted)
        f.truncate()
    return True
