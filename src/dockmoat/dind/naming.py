"""Names and labels of everything a nested daemon owns on the engine (pure).

Every daemon has an immutable *instance id* (`NAME-<random>` for `up`,
`pool-<random>` for warm pool daemons) that names its network, data volume and
certificate directory, and a container whose *name* says its state:

- `dockmoat-dindtmp-<instance>`: being started by an `up` that has not returned;
- `dockmoat-dindpool-<instance>`: warm and unassigned, owned by a pool service;
- `dockmoat-dind-<NAME>`: assigned to NAME (renamed last, so the name is the
  completion marker `gc` relies on; container names are unique engine-wide, so
  the rename is also what makes two `up NAME` race safely).

Labels cannot change after creation, the container name can: that is why the
name carries the state and labels carry the identity.
"""

from __future__ import annotations

import os
import re

from dockmoat.errors import ConfigError

PREFIX = "dockmoat-dind-"
TMP_PREFIX = "dockmoat-dindtmp-"
POOL_PREFIX = "dockmoat-dindpool-"
CONTEXT_PREFIX = "dockmoat-"

LABEL_INSTANCE = "dockmoat.dind"
LABEL_ROLE = "dockmoat.role"
LABEL_CACHE = "dockmoat.dind.cache"
LABEL_CLAIMANT = "dockmoat.dind.claimant"
LABEL_POOL = "dockmoat.dind.pool"

ROLE_DAEMON = "dind-daemon"
ROLE_NETWORK = "dind-network"
ROLE_DATA = "dind-data"
ROLE_CACHE = "dind-cache"

# The network alias every daemon answers to on its own network, as GitLab's
# `docker:dind` service does; jobs use tcp://docker:2376.
ALIAS = "docker"
TLS_PORT = 2376
# Where the server side of the certificates goes inside the daemon's container.
SERVER_CERT_DIR = "/certs/server"

# Docker container names allow [a-zA-Z0-9][a-zA-Z0-9_.-]; keep room for the prefix.
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")
_KEY = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}")


def validate_name(name: str) -> str:
    """Return NAME or raise ValueError saying what a NAME may contain."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid dind name {name!r}: use 1-63 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return name


def validate_cache_key(key: str) -> str:
    """Return KEY or raise ConfigError saying what a cache key may contain."""
    if not _KEY.fullmatch(key):
        raise ConfigError(
            f"invalid cache key {key!r}: use 1-128 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return key


def new_instance(name: str | None) -> str:
    """A fresh instance id: never reused, so a crashed run's leftovers never collide."""
    suffix = os.urandom(4).hex()
    return f"{name}-{suffix}" if name else f"pool-{suffix}"


def container_name(name: str) -> str:
    return PREFIX + name


def tmp_container_name(instance: str) -> str:
    return TMP_PREFIX + instance


def pool_container_name(instance: str) -> str:
    return POOL_PREFIX + instance


def network_name(instance: str) -> str:
    return f"{PREFIX}{instance}"


def data_volume_name(instance: str) -> str:
    return f"{PREFIX}{instance}-data"


def cache_volume_name(key: str) -> str:
    return f"{PREFIX}cache-{key}"


def context_name(name: str) -> str:
    return CONTEXT_PREFIX + name


def assigned_name(container: str) -> str | None:
    """NAME for an assigned daemon's container name, None for temporary/pool ones."""
    container = container.lstrip("/")
    if container.startswith(PREFIX):
        return container[len(PREFIX) :]
    return None
