"""The docker CLI context `dockmoat-NAME`, written straight into the context store.

Writing the store costs a few file writes instead of a `docker context create`
process (tens of milliseconds). Layout of the store (docker/cli `context/store`):

    $DOCKER_CONFIG/contexts/meta/<sha256(name)>/meta.json
    $DOCKER_CONFIG/contexts/tls/<sha256(name)>/docker/{ca,cert,key}.pem
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from dockmoat.dind.files import write_private

# Our mark in the context's metadata: `gc` removes only contexts that carry it.
MARK = "dockmoat dind"


def docker_config_dir(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"])
    return Path(env.get("HOME", "~")).expanduser() / ".docker"


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def meta_json(name: str, host: str, instance: str) -> bytes:
    meta = {
        "Name": name,
        "Metadata": {"Description": f"{MARK} {instance}"},
        "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}},
    }
    return json.dumps(meta).encode()


def write(config: Path, name: str, host: str, instance: str, cert_dir: Path) -> None:
    digest = _digest(name)
    meta_dir = config / "contexts" / "meta" / digest
    tls_dir = config / "contexts" / "tls" / digest / "docker"
    meta_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for filename in ("ca.pem", "cert.pem", "key.pem"):
        write_private(tls_dir / filename, (cert_dir / filename).read_bytes())
    write_private(meta_dir / "meta.json", meta_json(name, host, instance), 0o644)


def instance_of(config: Path, name: str) -> str | None:
    """The instance a dockmoat context points at; None if absent or not ours."""
    try:
        meta = json.loads((config / "contexts" / "meta" / _digest(name) / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    description = str(meta.get("Metadata", {}).get("Description", ""))
    if not description.startswith(MARK + " "):
        return None
    return description[len(MARK) + 1 :]


def remove(config: Path, name: str) -> bool:
    """Remove the context if it is one of ours; True when something was removed."""
    if instance_of(config, name) is None:
        return False
    digest = _digest(name)
    shutil.rmtree(config / "contexts" / "meta" / digest, ignore_errors=True)
    shutil.rmtree(config / "contexts" / "tls" / digest, ignore_errors=True)
    return True


def ours(config: Path) -> dict[str, str]:
    """Every dockmoat dind context: name -> instance."""
    found: dict[str, str] = {}
    meta_root = config / "contexts" / "meta"
    if not meta_root.is_dir():
        return found
    for entry in meta_root.iterdir():
        try:
            meta = json.loads((entry / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        name = str(meta.get("Name", ""))
        instance = instance_of(config, name) if name else None
        if instance:
            found[name] = instance
    return found
