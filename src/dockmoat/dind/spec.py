"""What a nested daemon looks like on the engine: options, dockerd argv, create bodies (pure)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from dockmoat.dind import naming
from dockmoat.errors import ConfigError

DEFAULT_IMAGE = "docker:27-dind"
DEFAULT_PIDS_LIMIT = 4096
DATA_ROOT = "/var/lib/docker"
# The official rootless image runs dockerd as uid 1000 with this data root.
ROOTLESS_DATA_ROOT = "/home/rootless/.local/share/docker"
ROOTLESS_UID = 1000

# What a rootless daemon's container gets instead of --privileged (`--rootless
# --no-privileged`), each measured necessary (docs/dind.md, "What each mode isolates"):
# - CAP_SYS_ADMIN in its bounding set: Debian's setuid-root newuidmap writes the user
#   namespace's uid_map as euid 0, not as the namespace's owner, and the kernel then
#   wants CAP_SYS_ADMIN over it (EPERM without). The daemon runs as an unprivileged
#   user, so only setuid programs ever hold it.
# - seccomp unconfined: under Docker's default profile rootlesskit fails to set up
#   slirp4netns' tap device.
# - /proc unmasked (systempaths=unconfined): with /proc's masked paths no nested
#   container can mount its /proc (the kernel refuses a procfs not fully visible).
# - /dev/net/tun, for the tap device; AppArmor unconfined where AppArmor runs.
TUN = "/dev/net/tun"
ROOTLESS_CAPS = ("SYS_ADMIN",)
ROOTLESS_SECURITY_OPT = ("seccomp=unconfined", "apparmor=unconfined")

# OCI runtimes that run a nested dockerd without --privileged: each container gets its
# own user namespace and a virtualised /proc and /sys (sysbox). Any other runtime (runc,
# crun, youki, ...) runs the daemon's container as runc would, so it stays privileged.
RUNTIMES_WITHOUT_PRIVILEGED = frozenset({"sysbox-runc"})

_MEMORY = re.compile(r"(\d+)([bkmg]?)", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_POOL = re.compile(r"base=([0-9a-fA-F.:/]+),size=(\d{1,3})")


def parse_memory(text: str) -> int:
    """Docker's memory syntax (`512m`, `2g`, bytes) to bytes; ConfigError when invalid."""
    match = _MEMORY.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"invalid memory size {text!r}: use e.g. 512m or 2g")
    value = int(match.group(1)) * _UNITS[match.group(2).lower()]
    # dockerd refuses less than 6 MiB; a nested daemon needs far more anyway.
    if value < 6 * 1024**2:
        raise ConfigError(f"memory {text!r} is too small: a nested daemon needs at least 6m")
    return value


def parse_cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"invalid cpu count {text!r}: use e.g. 2 or 0.5") from None
    if not 0.01 <= value <= 1024:
        raise ConfigError(f"cpu count {text!r} out of range (0.01-1024)")
    return value


def validate_address_pool(text: str) -> str:
    """dockerd's `--default-address-pool base=CIDR,size=N`; ConfigError when invalid."""
    match = _POOL.fullmatch(text)
    if not match:
        raise ConfigError(f"invalid address pool {text!r}: use base=10.123.0.0/16,size=24")
    try:
        base = ipaddress.ip_network(match.group(1), strict=True)
    except ValueError as error:
        raise ConfigError(f"invalid address pool base in {text!r}: {error}") from None
    size = int(match.group(2))
    if not base.prefixlen <= size <= base.max_prefixlen:
        raise ConfigError(f"address pool size {size} must lie between /{base.prefixlen} and /32")
    return text


@dataclass(frozen=True, slots=True)
class DindOptions:
    """What `up` (or a pool) asks for; validated on construction (ConfigError)."""

    image: str = DEFAULT_IMAGE
    memory: int | None = None
    cpus: float | None = None
    pids_limit: int = DEFAULT_PIDS_LIMIT
    rootless: bool = False
    # With rootless: the daemon's container without --privileged (see `host_privileges`).
    unprivileged: bool = False
    runtime: str | None = None
    mtu: int | None = None  # None: the host's default bridge MTU
    address_pools: tuple[str, ...] = ()
    storage_driver: str | None = None
    cache: str | None = None
    preload: tuple[str, ...] = field(default=())
    timeout: float = 60.0
    # The host address the TLS port is published on. Loopback by default; a
    # remote engine (--host tcp://...) needs one its clients can reach. mTLS
    # guards the port either way.
    publish_address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.publish_address)
        except ValueError:
            raise ConfigError(
                f"invalid publish address {self.publish_address!r}: use an IP"
            ) from None
        if not self.image or any(c.isspace() for c in self.image):
            raise ConfigError(f"invalid image reference {self.image!r}")
        if self.pids_limit < 64:
            raise ConfigError("a PID limit below 64 cannot run a nested daemon")
        if self.mtu is not None and not 576 <= self.mtu <= 65535:
            raise ConfigError(f"MTU {self.mtu} out of range (576-65535)")
        if self.unprivileged and not self.rootless:
            raise ConfigError(
                "--no-privileged needs --rootless: a nested dockerd running as root needs a "
                "privileged container (or --runtime sysbox-runc)"
            )
        if self.cache is not None:
            naming.validate_cache_key(self.cache)
        for pool in self.address_pools:
            validate_address_pool(pool)
        if self.runtime is not None and not re.fullmatch(
            r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", self.runtime
        ):
            raise ConfigError(f"invalid runtime name {self.runtime!r}")
        if self.storage_driver is not None and not re.fullmatch(
            r"[a-z0-9_-]+", self.storage_driver
        ):
            raise ConfigError(f"invalid storage driver {self.storage_driver!r}")
        if not 1 <= self.timeout <= 3600:
            raise ConfigError("timeout must lie between 1 and 3600 seconds")

    def shape(self) -> dict[str, Any]:
        """The part a warm pool daemon must match to stand in for a cold `up`."""
        return {
            "image": self.image,
            "memory": self.memory,
            "cpus": self.cpus,
            "pids_limit": self.pids_limit,
            "rootless": self.rootless,
            "unprivileged": self.unprivileged,
            "runtime": self.runtime,
            "mtu": self.mtu,
            "address_pools": list(self.address_pools),
            "storage_driver": self.storage_driver,
            "publish_address": self.publish_address,
        }


def pool_shape(options: DindOptions, host: str | None) -> dict[str, Any]:
    """What `take` asks a warm pool for: the shape, the engine, and the cache key (a pool
    holds warm daemons per key, their data roots on the key's volume)."""
    shape: dict[str, Any] = {**options.shape(), "host": host or ""}
    if options.cache:
        shape["cache"] = options.cache
    return shape


def data_root(options: DindOptions) -> str:
    return ROOTLESS_DATA_ROOT if options.rootless else DATA_ROOT


def dockerd_argv(options: DindOptions, mtu: int) -> list[str]:
    """The nested dockerd's arguments: mutual TLS on 2376 and nothing unauthenticated.

    Passing `dockerd ...` explicitly makes the official entrypoint skip its
    "no TLS? sleep 16 s" path; DOCKER_TLS_CERTDIR="" (see `container_config`)
    makes it skip generating RSA keys.
    """
    argv = [
        "dockerd",
        f"--host=tcp://0.0.0.0:{naming.TLS_PORT}",
        "--tlsverify",
        f"--tlscacert={naming.SERVER_CERT_DIR}/ca.pem",
        f"--tlscert={naming.SERVER_CERT_DIR}/cert.pem",
        f"--tlskey={naming.SERVER_CERT_DIR}/key.pem",
        f"--data-root={data_root(options)}",
        f"--mtu={mtu}",
    ]
    if not options.rootless:
        # A local socket for `docker exec <daemon> docker ...` when debugging;
        # it is reachable only from inside the daemon's own container.
        argv.append("--host=unix:///var/run/docker.sock")
    argv += [f"--default-address-pool={pool}" for pool in options.address_pools]
    if options.storage_driver:
        argv.append(f"--storage-driver={options.storage_driver}")
    return argv


def labels(
    instance: str, role: str, claimant: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    result = {
        naming.LABEL_INSTANCE: instance,
        naming.LABEL_ROLE: role,
        naming.LABEL_CLAIMANT: claimant,
    }
    result.update(extra or {})
    return result


def network_options(mtu: int) -> dict[str, str]:
    return {"com.docker.network.driver.mtu": str(mtu)}


# The server certificate must name the container's IP, which the engine assigns
# only at start (and fixed IPs need a user-chosen subnet). So the container
# starts with a tiny wrapper that unpacks the certificates from its stdin (the
# manager attaches before the start and writes the tar as soon as the IP is
# known: no `PUT /archive` round trip after the start), checks that `ready`
# (the tar's last member) arrived, then execs its arguments: the image's own
# entrypoint with dockerd's arguments, as `daemon_command` puts them together.
#
# With NETWORK_MTU_ENV set (the MTU is not dockerd's default 1500), the networks a job
# creates in the nested daemon (compose's, `docker network create`) get that MTU
# too: `--mtu` sets only docker0's, and dockerd >= 24 takes
# `--default-network-opt=bridge=com.docker.network.driver.mtu=N` for the others. Older
# dockerd refuses that flag, so the wrapper asks `dockerd --help` first, in the
# background while the certificates are on their way, and says the answer on stderr
# (NETWORK_OPT_MARK). The answer depends only on the image's files, so the launcher
# remembers it per image ID (state.py) and passes it in NETWORK_OPT_ENV from then on:
# the probe (~0.2 s before dockerd can start, on a 2-core machine) runs once per image.
NETWORK_MTU_ENV = "DOCKMOAT_NETWORK_MTU"
NETWORK_OPT_ENV = "DOCKMOAT_NETWORK_OPT"  # "yes"/"no": known; unset: ask dockerd --help
NETWORK_OPT_MARK = "dockmoat: dockerd knows --default-network-opt: "
# dockerd's own default MTU: no job network needs another one.
DOCKERD_MTU = 1500
_HELP = "/tmp/.dockmoat-dockerd-help"
RECEIVE_CERTS = (
    f'if [ -n "${NETWORK_MTU_ENV}" ] && [ -z "${NETWORK_OPT_ENV}" ]; then '
    f"dockerd --help >{_HELP} 2>&1 </dev/null & fi; "
    "tar -x -f - -C / || { echo 'dockmoat: cannot unpack the certificates' >&2; exit 1; }; "
    f"[ -e {naming.SERVER_CERT_DIR}/ready ] || "
    "{ echo 'dockmoat: no certificates arrived on stdin' >&2; exit 1; }; "
    f'if [ -n "${NETWORK_MTU_ENV}" ]; then '
    f'if [ -z "${NETWORK_OPT_ENV}" ]; then wait; {NETWORK_OPT_ENV}=no; '
    f"grep -q -e --default-network-opt {_HELP} && {NETWORK_OPT_ENV}=yes; rm -f {_HELP}; "
    f'echo "{NETWORK_OPT_MARK}${NETWORK_OPT_ENV}" >&2; fi; '
    f'if [ "${NETWORK_OPT_ENV}" = yes ]; then '
    f'set -- "$@" "--default-network-opt=bridge=com.docker.network.driver.mtu=${NETWORK_MTU_ENV}"; '
    "fi; fi; "
    'exec "$@" </dev/null'
)


def network_opt_from_log(log: bytes) -> bool | None:
    """The wrapper's answer to "does this dockerd know --default-network-opt?" in a
    daemon's log (stderr), or None when it did not ask."""
    mark = NETWORK_OPT_MARK.encode()
    for line in log.splitlines():
        if line.startswith(mark):
            answer = line[len(mark) :].strip()
            return {b"yes": True, b"no": False}.get(answer)
    return None


def network_env(mtu: int, network_opt: bool | None) -> list[str]:
    """The wrapper's environment for the MTU of job networks (see RECEIVE_CERTS):
    nothing at dockerd's default MTU; else the MTU, and whether dockerd takes
    `--default-network-opt` when that is known (None: the wrapper asks)."""
    if mtu == DOCKERD_MTU:
        return []
    env = [f"{NETWORK_MTU_ENV}={mtu}"]
    if network_opt is not None:
        env.append(f"{NETWORK_OPT_ENV}={'yes' if network_opt else 'no'}")
    return env


# Shells whose `-c STRING` form ignores the arguments after the string's $0.
_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "busybox"})
# dockerd flags an image may not bring along: dockmoat alone decides where the nested
# daemon listens and how it authenticates (a second --host would listen without TLS).
_OWN_FLAGS = ("--host", "--tls")


def daemon_command(image_entrypoint: list[str], argv: list[str]) -> list[str]:
    """What the certificate wrapper execs so that dockerd runs with `argv` (`dockerd ...`).

    - no entrypoint: `argv` itself;
    - an entrypoint that is dockerd (`dockerd`, `/usr/bin/dockerd --log-level=warn`, or
      behind an init: `tini -- dockerd`): that entrypoint, its own dockerd flags kept,
      and `argv` without its `dockerd` (which dockerd would take as an argument and
      refuse: "dockerd accepts no argument(s)");
    - any other entrypoint (the official `dockerd-entrypoint.sh`, a script or an init
      that execs its arguments): the entrypoint with `argv` as its arguments.

    ValueError when the image cannot be started that way: a shell's `-c` entrypoint
    (it ignores its arguments, so dockerd would never get TLS) or dockerd flags of the
    image's own that choose listeners or TLS.
    """
    assert argv and argv[0] == "dockerd"
    if not image_entrypoint:
        return list(argv)
    names = [PurePosixPath(part).name for part in image_entrypoint]
    shell = 1 if names[0] == "busybox" and len(names) > 1 else 0
    option = image_entrypoint[shell + 1] if len(names) > shell + 1 else ""
    if names[shell] in _SHELLS and option[:1] == "-" and option[1:2] != "-" and "c" in option:
        raise ValueError(
            f"the image's entrypoint {image_entrypoint!r} is a shell command, which ignores "
            "the arguments dockmoat gives dockerd (its TLS listener); use an image whose "
            "entrypoint is dockerd, none, or a script that execs its arguments"
        )
    if "dockerd" not in names:
        return [*image_entrypoint, *argv]
    at = names.index("dockerd")
    own = image_entrypoint[at + 1 :]
    for flag in own:
        short = flag.startswith("-") and not flag.startswith("--") and "H" in flag
        if short or flag.split("=", 1)[0].startswith(_OWN_FLAGS):
            raise ValueError(
                f"the image's entrypoint gives dockerd {flag!r}; dockmoat alone sets where "
                "the nested daemon listens and its TLS: use an image without that flag"
            )
    return [*image_entrypoint, *argv[1:]]


def privileged(options: DindOptions) -> bool:
    """Whether the daemon's container is `--privileged`: always, unless its runtime is
    one that runs a nested dockerd without (RUNTIMES_WITHOUT_PRIVILEGED) or it is a
    rootless daemon asked for `--no-privileged`.

    A rootless daemon's container is privileged by default, as the official rootless
    image asks: without, it needs the settings of ROOTLESS_CAPS and
    ROOTLESS_SECURITY_OPT, and a `--privileged` container in the nested daemon cannot
    start (its sysfs cannot be mounted read-write), measured in docs/dind.md.
    """
    if options.unprivileged:
        return False
    return options.runtime not in RUNTIMES_WITHOUT_PRIVILEGED


def host_privileges(options: DindOptions) -> dict[str, Any]:
    """The HostConfig keys that grant the daemon's container its privileges."""
    if privileged(options):
        return {"Privileged": True}
    if options.unprivileged:
        return {
            "Privileged": False,
            "CapAdd": list(ROOTLESS_CAPS),
            "SecurityOpt": list(ROOTLESS_SECURITY_OPT),
            # The API's spelling of `--security-opt systempaths=unconfined`: empty lists
            # replace the engine's default masked and read-only paths.
            "MaskedPaths": [],
            "ReadonlyPaths": [],
            "Devices": [{"PathOnHost": TUN, "PathInContainer": TUN, "CgroupPermissions": "rwm"}],
        }
    return {"Privileged": False}


def container_env(options: DindOptions) -> list[str]:
    env = ["DOCKER_TLS_CERTDIR="]
    if options.rootless:
        # rootlesskit runs dockerd in its own network namespace; the official
        # rootless entrypoint passes these flags on, publishing 2376 to the container.
        env.append(
            f"DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS=-p 0.0.0.0:{naming.TLS_PORT}:{naming.TLS_PORT}/tcp"
        )
    return env


def container_config(
    options: DindOptions,
    *,
    instance: str,
    network: str,
    image_entrypoint: list[str],
    volume: str,
    mtu: int,
    container_labels: dict[str, str],
    volume_labels: dict[str, str],
    network_opt: bool | None = None,
) -> dict[str, Any]:
    """The body of `POST /containers/create` for a nested daemon.

    `network_opt`: whether the image's dockerd takes `--default-network-opt`, when
    known (None: the wrapper asks it; see RECEIVE_CERTS).

    ValueError when the image's entrypoint cannot start dockerd (`daemon_command`).
    """
    host_config: dict[str, Any] = {
        # Nested dockerd needs mounts, cgroups and iptables (a rootless one too: see
        # `privileged`); sysbox-runc gives it those without --privileged.
        **host_privileges(options),
        "NetworkMode": network,
        "PortBindings": {
            f"{naming.TLS_PORT}/tcp": [{"HostIp": options.publish_address, "HostPort": ""}]
        },
        "Mounts": [
            {
                # A named volume, not the image's anonymous one: overlay2 works on
                # it, it is labelled for clean-up, and a cache key can keep it.
                "Type": "volume",
                "Source": volume,
                "Target": data_root(options),
                "VolumeOptions": {"Labels": volume_labels},
            }
        ],
        "PidsLimit": options.pids_limit,
        "Init": False,
    }
    if options.runtime:
        host_config["Runtime"] = options.runtime
    if options.memory:
        host_config["Memory"] = options.memory
        # Same value: no swap on top of the limit, as `docker run --memory` users expect.
        host_config["MemorySwap"] = options.memory
    if options.cpus:
        host_config["NanoCpus"] = int(options.cpus * 1e9)
    return {
        "Image": options.image,
        "Entrypoint": ["/bin/sh", "-c", RECEIVE_CERTS, "dockmoat-certs"],
        # stdin carries the certificates once (see RECEIVE_CERTS), then closes.
        "OpenStdin": True,
        "StdinOnce": True,
        "Cmd": daemon_command(image_entrypoint, dockerd_argv(options, mtu)),
        "Env": container_env(options) + network_env(mtu, network_opt),
        "Hostname": instance[:63],
        "Labels": container_labels,
        "ExposedPorts": {f"{naming.TLS_PORT}/tcp": {}},
        "HostConfig": host_config,
        "NetworkingConfig": {
            "EndpointsConfig": {
                network: {"Aliases": [naming.ALIAS, instance]},
            }
        },
    }
