"""The reference table: every input of every Engine API endpoint, once, with its treatment.

For each route of `endpoints.ENDPOINTS` it lists every path parameter, query
parameter, JSON body field (dotted path; `[]` an array's items, `*` a map's
values) and header the Engine API defines (the specs of API 1.41 and 1.56, plus
what dockerd reads that the specs omit, each with a comment why) and says what
the guard does with it:

- `Ref(kind, form)`: the value names an object (container, image, network, ...)
  in the given form; tenancy must resolve it in the tenant's name space or
  refuse the request (`tenancy/refs.py` says which, per field);
- `Ruled(rule, ...)`: a value decided by the named policy rules;
- `Inert(why)`: a value that names nothing and reaches nothing beyond the
  request's own object;
- `Closed(rule)`: an endpoint the named rule refuses whole; the one entry `*`
  stands for all of its body.

`since`/`until` are API versions: the first version whose daemon may read the
field (a lower bound where the spec does not say: a field absent from the 1.41
spec has `since` 1.42 or later) and the last one that does. A tests walks both
specs and fails when any of their endpoints, parameters or body fields is not
here (tests/unit/api/test_reference.py). The guard refuses a query parameter or
a JSON body field the table does not list (`unmodeled`), so nothing it has not
read reaches the daemon. Pure data and pure look-ups; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import cache, lru_cache
from typing import Final, Literal

from dockmoat.api.gojson import fold

#: The newest API version this table models; an upstream newer than this is named at start.
NEWEST_MODELED: Final = (1, 56)
#: The oldest API version the guard forwards (`system.api-version`).
OLDEST_MODELED: Final = (1, 24)

Version = tuple[int, int]
Place = Literal["path", "query", "body", "header"]


class Kind(StrEnum):
    CONTAINER = "container"
    IMAGE = "image"
    NETWORK = "network"
    VOLUME = "volume"
    EXEC = "exec"
    PLUGIN = "plugin"
    SWARM = "swarm object"
    CHECKPOINT = "checkpoint"
    BUILD = "build"
    HOST_PATH = "host path"


class Form(StrEnum):
    LOOKUP = "name, full ID or unique ID prefix (dockerd's look-up order)"
    NAME = "name"
    ID = "full ID"
    IMAGE_REF = "image reference: name[:tag], name@digest, ID or ID prefix"
    REPO = "repository, which may embed :tag"
    TAG = "tag"
    MODE = "container:<ref>, or a mode (host, private, shareable, ...)"
    NETWORK_MODE = "network name, ID or ID prefix, or bridge/host/none/default/container:<ref>"
    BIND = "source:target[:options]; source a volume name or a host path"
    LINK = "<ref>[:alias]"
    VOLUMES_FROM = "<ref>[:ro|rw]"
    FILTERS = "JSON filters whose values may name objects"
    MAP_KEYS = "the keys of the map name networks"
    LIST = "comma-separated or JSON list of image references"
    CHANGES = "Dockerfile instructions (commit and import)"
    STREAM = "a tar stream that names objects inside (Dockerfile FROM, image tags)"
    MOUNT_SOURCE = "volume name, host path or image reference, by the mount's Type"


@dataclass(frozen=True, slots=True)
class Ref:
    """The value names an object; `rules` are the policy rules that also read it."""

    kind: Kind
    form: Form
    rules: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Ruled:
    """A value decided by the named policy rules."""

    rules: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Inert:
    """A value that names nothing outside the request's own object."""

    why: str = ""


@dataclass(frozen=True, slots=True)
class Closed:
    """An endpoint the rule refuses whole: its body is not read, nothing of it is forwarded."""

    rule: str


Treatment = Ref | Ruled | Inert | Closed
INERT: Final = Inert()


@dataclass(frozen=True, slots=True)
class Field:
    """One input of one endpoint."""

    place: Place
    name: str
    treatment: Treatment
    since: Version = OLDEST_MODELED
    until: Version | None = None
    legacy: bool = False
    """A deprecated form dockerd reads only on some engines (top-level HostConfig fields)."""
    note: str = ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    route: str
    fields: tuple[Field, ...]
    since: Version = OLDEST_MODELED


# --- compact constructors -------------------------------------------------------------

#: (name, treatment[, since[, note]])
_Spec = tuple[str, Treatment] | tuple[str, Treatment, Version] | tuple[str, Treatment, Version, str]


def _rule(*rules: str) -> Ruled:
    return Ruled(tuple(rules))


def _field(place: Place, spec: _Spec, prefix: str = "") -> Field:
    if len(spec) == 2:
        return Field(place, prefix + spec[0], spec[1])
    if len(spec) == 3:
        return Field(place, prefix + spec[0], spec[1], spec[2])
    return Field(place, prefix + spec[0], spec[1], spec[2], note=spec[3])


def _fields(place: Place, specs: Iterable[_Spec], prefix: str = "") -> list[Field]:
    return [_field(place, spec, prefix) for spec in specs]


def _q(*specs: _Spec) -> list[Field]:
    return _fields("query", specs)


def _b(*specs: _Spec, prefix: str = "") -> list[Field]:
    return _fields("body", specs, prefix)


def _h(*specs: _Spec) -> list[Field]:
    return _fields("header", specs)


def _path(name: str, treatment: Treatment) -> list[Field]:
    return [Field("path", name, treatment)]


CONTAINER_REF: Final = Ref(Kind.CONTAINER, Form.LOOKUP)
IMAGE_REF: Final = Ref(Kind.IMAGE, Form.IMAGE_REF)
NETWORK_REF: Final = Ref(Kind.NETWORK, Form.LOOKUP)
VOLUME_REF: Final = Ref(Kind.VOLUME, Form.NAME)
EXEC_REF: Final = Ref(Kind.EXEC, Form.ID)
FILTERS: Final[dict[str, Treatment]] = {
    "containers": Ref(Kind.CONTAINER, Form.FILTERS),
    "images": Ref(Kind.IMAGE, Form.FILTERS),
    "networks": Ref(Kind.NETWORK, Form.FILTERS),
    "volumes": Ref(Kind.VOLUME, Form.FILTERS),
}
_AUTH: Final = Inert("registry credentials, passed to the registry the request names")

# --- shared body groups ---------------------------------------------------------------

_V = {n: (1, n) for n in range(24, 57)}

#: container.Config (create, commit). `MacAddress` left the spec in 1.44; dockerd 28
#: still reads it (deprecated) and docker CLI/docker-py send it.
CONFIG: Final[tuple[_Spec, ...]] = (
    ("Hostname", INERT),
    ("Domainname", INERT),
    ("User", _rule("containers.non-root-user")),
    ("AttachStdin", INERT),
    ("AttachStdout", INERT),
    ("AttachStderr", INERT),
    ("ExposedPorts", INERT),
    ("Tty", INERT),
    ("OpenStdin", INERT),
    ("StdinOnce", INERT),
    ("Env", INERT),
    ("Cmd", INERT),
    ("Healthcheck", INERT),
    ("Healthcheck.Test", INERT),
    ("Healthcheck.Interval", INERT),
    ("Healthcheck.Timeout", INERT),
    ("Healthcheck.Retries", INERT),
    ("Healthcheck.StartPeriod", INERT),
    ("Healthcheck.StartInterval", INERT, _V[44]),
    ("ArgsEscaped", INERT),
    ("Image", IMAGE_REF),
    ("Volumes", INERT, OLDEST_MODELED, "anonymous volumes: created for the container"),
    ("WorkingDir", _rule("containers.proc-workdir")),
    ("Entrypoint", INERT),
    ("NetworkDisabled", INERT),
    ("MacAddress", INERT, OLDEST_MODELED, "deprecated in 1.44, still read by dockerd 28"),
    ("OnBuild", Ref(Kind.IMAGE, Form.CHANGES)),
    ("Labels", Ruled(("tenancy.owner-label",))),
    ("StopSignal", INERT),
    ("StopTimeout", INERT),
    ("Shell", INERT),
)

#: container.Resources: HostConfig fields that `update` takes too.
RESOURCES: Final[tuple[_Spec, ...]] = (
    ("CpuShares", _rule("containers.resource-bounds")),
    ("Memory", _rule("containers.memory-limit", "tenancy.quota.memory")),
    ("CgroupParent", _rule("containers.cgroup-parent")),
    ("BlkioWeight", _rule("containers.resource-bounds")),
    ("BlkioWeightDevice", _rule("containers.resource-bounds")),
    ("BlkioWeightDevice[].Path", Ref(Kind.HOST_PATH, Form.NAME)),
    ("BlkioWeightDevice[].Weight", _rule("containers.resource-bounds")),
    ("BlkioDeviceReadBps", INERT),
    ("BlkioDeviceReadBps[].Path", Ref(Kind.HOST_PATH, Form.NAME)),
    ("BlkioDeviceReadBps[].Rate", Inert("a limit only lowers")),
    ("BlkioDeviceWriteBps", INERT),
    ("BlkioDeviceWriteBps[].Path", Ref(Kind.HOST_PATH, Form.NAME)),
    ("BlkioDeviceWriteBps[].Rate", Inert("a limit only lowers")),
    ("BlkioDeviceReadIOps", INERT),
    ("BlkioDeviceReadIOps[].Path", Ref(Kind.HOST_PATH, Form.NAME)),
    ("BlkioDeviceReadIOps[].Rate", Inert("a limit only lowers")),
    ("BlkioDeviceWriteIOps", INERT),
    ("BlkioDeviceWriteIOps[].Path", Ref(Kind.HOST_PATH, Form.NAME)),
    ("BlkioDeviceWriteIOps[].Rate", Inert("a limit only lowers")),
    ("CpuPeriod", _rule("containers.cpu-limit")),
    ("CpuQuota", _rule("containers.cpu-limit")),
    ("CpuRealtimePeriod", _rule("containers.resource-bounds")),
    ("CpuRealtimeRuntime", _rule("containers.resource-bounds")),
    ("CpusetCpus", INERT),
    ("CpusetMems", INERT),
    ("Devices", _rule("containers.devices")),
    ("Devices[].PathOnHost", Ruled(("containers.devices",))),
    ("Devices[].PathInContainer", _rule("containers.devices")),
    ("Devices[].CgroupPermissions", _rule("containers.devices")),
    ("DeviceCgroupRules", _rule("containers.devices")),
    ("DeviceRequests", _rule("containers.devices")),
    ("DeviceRequests[].Driver", _rule("containers.devices")),
    ("DeviceRequests[].Count", _rule("containers.devices")),
    ("DeviceRequests[].DeviceIDs", _rule("containers.devices")),
    ("DeviceRequests[].Capabilities", _rule("containers.devices")),
    ("DeviceRequests[].Options", _rule("containers.devices")),
    ("KernelMemory", Inert("a limit only lowers; removed in 1.42 (ignored since)")),
    ("KernelMemoryTCP", Inert("a limit only lowers; removed in 1.42 (ignored since)")),
    ("MemoryReservation", INERT),
    ("MemorySwap", INERT),
    ("MemorySwappiness", INERT),
    ("NanoCpus", _rule("containers.cpu-limit")),
    ("OomKillDisable", _rule("containers.resource-bounds")),
    ("Init", INERT),
    ("PidsLimit", _rule("containers.pids-limit")),
    ("Ulimits", _rule("containers.resource-bounds")),
    ("Ulimits[].Name", _rule("containers.resource-bounds")),
    ("Ulimits[].Soft", _rule("containers.resource-bounds")),
    ("Ulimits[].Hard", _rule("containers.resource-bounds")),
    ("CpuCount", Inert("Windows only")),
    ("CpuPercent", Inert("Windows only")),
    ("IOMaximumIOps", Inert("Windows only")),
    ("IOMaximumBandwidth", Inert("Windows only")),
)

_NET_MODE: Final = Ref(
    Kind.NETWORK, Form.NETWORK_MODE, ("containers.host-namespaces", "containers.namespace-joins")
)
_JOIN_MODE: Final = Ref(
    Kind.CONTAINER, Form.MODE, ("containers.host-namespaces", "containers.namespace-joins")
)
_NS_MODE: Final = _rule("containers.host-namespaces")
_CONFINEMENT: Final = _rule("containers.confinement")
_BINDS: Final = _rule("containers.bind-mounts", "containers.no-binds", "volumes.host-path")

#: container.HostConfig beyond Resources (create only).
HOST_ONLY: Final[tuple[_Spec, ...]] = (
    ("Binds", Ref(Kind.VOLUME, Form.BIND, _BINDS.rules)),
    ("ContainerIDFile", Inert("read by the client only")),
    ("LogConfig", _rule("containers.log-driver")),
    ("LogConfig.Type", _rule("containers.log-driver")),
    ("LogConfig.Config", _rule("containers.log-driver")),
    ("NetworkMode", _NET_MODE),
    ("PortBindings", _rule("containers.published-ports")),
    ("PortBindings.*[].HostIp", _rule("containers.published-ports")),
    ("PortBindings.*[].HostPort", _rule("containers.published-ports")),
    ("RestartPolicy", INERT),
    ("RestartPolicy.Name", INERT),
    ("RestartPolicy.MaximumRetryCount", INERT),
    ("AutoRemove", INERT),
    ("VolumeDriver", _rule("volumes.driver")),
    ("VolumesFrom", Ref(Kind.CONTAINER, Form.VOLUMES_FROM, ("containers.volumes-from",))),
    ("Mounts", _BINDS),
    ("Mounts[].Target", INERT),
    ("Mounts[].Source", Ref(Kind.VOLUME, Form.MOUNT_SOURCE, _BINDS.rules)),
    ("Mounts[].Type", _BINDS),
    ("Mounts[].ReadOnly", INERT),
    ("Mounts[].Consistency", INERT),
    ("Mounts[].BindOptions", _BINDS),
    ("Mounts[].BindOptions.Propagation", _BINDS),
    ("Mounts[].BindOptions.NonRecursive", _BINDS),
    ("Mounts[].BindOptions.CreateMountpoint", _BINDS, _V[44]),
    ("Mounts[].BindOptions.ReadOnlyNonRecursive", _BINDS, _V[44]),
    ("Mounts[].BindOptions.ReadOnlyForceRecursive", _BINDS, _V[44]),
    ("Mounts[].VolumeOptions", INERT),
    ("Mounts[].VolumeOptions.NoCopy", INERT),
    ("Mounts[].VolumeOptions.Labels", Ruled(("tenancy.owner-label",))),
    ("Mounts[].VolumeOptions.DriverConfig", _rule("volumes.driver", "volumes.host-path")),
    ("Mounts[].VolumeOptions.DriverConfig.Name", _rule("volumes.driver")),
    ("Mounts[].VolumeOptions.DriverConfig.Options", _rule("volumes.host-path")),
    ("Mounts[].VolumeOptions.Subpath", INERT, _V[45]),
    ("Mounts[].ImageOptions", _BINDS, _V[48]),
    ("Mounts[].ImageOptions.Subpath", _BINDS, _V[48]),
    # Go's mount.Mount (not in the specs): swarm cluster volumes; Type "cluster" is refused.
    ("Mounts[].ClusterOptions", _BINDS),
    ("Mounts[].TmpfsOptions", INERT),
    ("Mounts[].TmpfsOptions.SizeBytes", INERT),
    ("Mounts[].TmpfsOptions.Mode", INERT),
    ("Mounts[].TmpfsOptions.Options", INERT, _V[46]),
    ("ConsoleSize", INERT),
    ("Annotations", _rule("containers.runtime"), _V[43]),
    ("CapAdd", _rule("containers.capabilities")),
    ("CapDrop", _rule("containers.drop-all-caps")),
    # Go's HostConfig 1.40-1.42 (`Capabilities`, a full set); not in the 1.41 spec but
    # read by dockerd 20.10 and sent (null) by the 20.10 CLI.
    ("Capabilities", _rule("containers.capabilities")),
    ("CgroupnsMode", _rule("containers.host-namespaces", "containers.cgroupns-private")),
    ("Dns", INERT),
    ("DnsOptions", INERT),
    ("DnsSearch", INERT),
    ("ExtraHosts", INERT),
    ("GroupAdd", INERT),
    ("IpcMode", _JOIN_MODE),
    ("Cgroup", _JOIN_MODE),
    ("Links", Ref(Kind.CONTAINER, Form.LINK, ("containers.links",))),
    ("OomScoreAdj", _rule("containers.resource-bounds")),
    ("PidMode", _JOIN_MODE),
    ("Privileged", _rule("containers.privileged")),
    ("PublishAllPorts", _rule("containers.published-ports")),
    ("ReadonlyRootfs", INERT),
    ("SecurityOpt", _CONFINEMENT),
    ("StorageOpt", Inert("a size limit; only lowers")),
    ("Tmpfs", INERT),
    ("UTSMode", _NS_MODE),
    ("UsernsMode", _NS_MODE),
    ("ShmSize", _rule("containers.resource-bounds")),
    ("Sysctls", _rule("containers.sysctls")),
    ("Runtime", _rule("containers.runtime")),
    ("Isolation", Inert("Windows only")),
    # docker-py's init_path (HostConfig of API < 1.25); dockerd ignores it since.
    ("InitPath", Inert("ignored by dockerd")),
    ("MaskedPaths", _CONFINEMENT),
    ("ReadonlyPaths", _CONFINEMENT),
)

HOST_CONFIG: Final = (*RESOURCES, *HOST_ONLY)

#: network.EndpointSettings (create's EndpointsConfig values, connect's EndpointConfig).
ENDPOINT_SETTINGS: Final[tuple[_Spec, ...]] = (
    ("IPAMConfig", INERT),
    ("IPAMConfig.IPv4Address", INERT),
    ("IPAMConfig.IPv6Address", INERT),
    ("IPAMConfig.LinkLocalIPs", INERT),
    ("Links", Ref(Kind.CONTAINER, Form.LINK, ("containers.links",))),
    ("MacAddress", INERT),
    ("Aliases", INERT),
    ("DriverOpts", _rule("networks.driver-options")),
    ("GwPriority", INERT, _V[48]),
    ("NetworkID", NETWORK_REF),
    ("EndpointID", Inert("an output field; dockerd ignores it on input")),
    ("Gateway", INERT),
    ("IPAddress", INERT),
    ("IPPrefixLen", INERT),
    ("IPv6Gateway", INERT),
    ("GlobalIPv6Address", INERT),
    ("GlobalIPv6PrefixLen", INERT),
    ("DNSNames", INERT, _V[44]),
)

#: Cluster volume specs (swarm CSI volumes, 1.42+): refused by `volumes.driver` (they
#: need a CSI plugin), listed so their fields are read, not forwarded unseen.
_CLUSTER_VOLUME: Final[tuple[str, ...]] = (
    "",
    ".Group",
    ".AccessMode",
    ".AccessMode.Scope",
    ".AccessMode.Sharing",
    ".AccessMode.MountVolume",
    ".AccessMode.Secrets",
    ".AccessMode.Secrets[].Key",
    ".AccessMode.Secrets[].Secret",
    ".AccessMode.AccessibilityRequirements",
    ".AccessMode.AccessibilityRequirements.Requisite",
    ".AccessMode.AccessibilityRequirements.Requisite[].Segments",
    ".AccessMode.AccessibilityRequirements.Preferred",
    ".AccessMode.AccessibilityRequirements.Preferred[].Segments",
    ".AccessMode.CapacityRange",
    ".AccessMode.CapacityRange.RequiredBytes",
    ".AccessMode.CapacityRange.LimitBytes",
    ".AccessMode.Availability",
)


def _cluster_volume(root: str) -> list[Field]:
    return [
        Field("body", root + suffix, _rule("volumes.cluster"), _V[42]) for suffix in _CLUSTER_VOLUME
    ]


def _legacy_host_config() -> list[Field]:
    """HostConfig fields at the top level of a create body.

    dockerd 20.10's create wrapper embeds a second HostConfig there and uses it when
    "HostConfig" is absent or null (merging Memory, MemorySwap, CpuShares, CpusetCpus
    and VolumeDriver otherwise); Engine 28.5 ignores them all (both verified). The
    policy checks both holders; tenancy refuses them (`tenancy.legacy-field`).
    """
    top_names = {fold(spec[0]) for spec in CONFIG}
    return [
        replace(_field("body", spec), legacy=True, note="legacy top-level HostConfig field")
        for spec in HOST_CONFIG
        if fold(spec[0].split(".", 1)[0].split("[", 1)[0]) not in top_names
    ] + [
        Field(
            "body",
            "Cpuset",
            Inert("legacy CpusetCpus"),
            legacy=True,
            note="deprecated wrapper field of dockerd 20.10's create",
        )
    ]


_BUILD_CLOSED = _rule("build.network-host", "build.remote-context")

# --- the table ------------------------------------------------------------------------


def _closed(route: str, rule: str, *params: str) -> Endpoint:
    """An endpoint a rule refuses whole: its parameters listed, its body as one entry."""
    fields = [Field("body", "*", Closed(rule))]
    places: dict[str, Place] = {"path": "path", "query": "query", "header": "header"}
    for param in params:
        place, _, name = param.partition(":")
        fields.append(Field(places.get(place, "body"), name, Closed(rule)))
    return Endpoint(route, tuple(fields))


_SWARM = "system.swarm"
_PLUGINS = "system.plugins"
_CHECKPOINTS = "system.checkpoints"
_LOGS_QUERY: Final[tuple[_Spec, ...]] = (
    ("follow", INERT),
    ("since", INERT),
    ("until", INERT),
    ("stderr", INERT),
    ("stdout", INERT),
    ("tail", INERT),
    ("timestamps", INERT),
    ("details", INERT),
)

#: The query of containers.attach and containers.attach_ws (one API, two transports).
_ATTACH_QUERY: Final[tuple[_Spec, ...]] = (
    ("detachKeys", INERT),
    ("logs", INERT),
    ("stream", INERT),
    ("stdin", INERT),
    ("stdout", INERT),
    ("stderr", INERT),
)

ENDPOINT_FIELDS: Final[tuple[Endpoint, ...]] = (
    # checkpoints: experimental daemons only
    _closed("containers.checkpoint_list", _CHECKPOINTS, "path:name", "query:dir"),
    _closed(
        "containers.checkpoint_create",
        _CHECKPOINTS,
        "path:name",
        "body:CheckpointID",
        "body:CheckpointDir",
        "body:Exit",
    ),
    _closed(
        "containers.checkpoint_delete", _CHECKPOINTS, "path:name", "path:checkpoint", "query:dir"
    ),
    # containers
    Endpoint("containers.archive_info", (*_path("name", CONTAINER_REF), *_q(("path", INERT)))),
    Endpoint(
        "containers.list",
        tuple(
            _q(
                ("all", INERT),
                ("limit", INERT),
                ("size", INERT),
                ("filters", FILTERS["containers"]),
                # dockerd still reads the pre-1.24 list parameters (not in the specs).
                ("since", Ref(Kind.CONTAINER, Form.LOOKUP), OLDEST_MODELED, "legacy"),
                ("before", Ref(Kind.CONTAINER, Form.LOOKUP), OLDEST_MODELED, "legacy"),
                ("trunc_cmd", Inert("sent by docker-py; ignored by dockerd")),
            )
        ),
    ),
    Endpoint("containers.export", tuple(_path("name", CONTAINER_REF))),
    Endpoint("containers.changes", tuple(_path("name", CONTAINER_REF))),
    Endpoint("containers.inspect", (*_path("name", CONTAINER_REF), *_q(("size", INERT)))),
    Endpoint("containers.top", (*_path("name", CONTAINER_REF), *_q(("ps_args", INERT)))),
    Endpoint("containers.logs", (*_path("name", CONTAINER_REF), *_q(*_LOGS_QUERY))),
    Endpoint(
        "containers.stats",
        (*_path("name", CONTAINER_REF), *_q(("stream", INERT), ("one-shot", INERT, _V[41]))),
    ),
    Endpoint(
        "containers.attach_ws",
        (
            *_path("name", CONTAINER_REF),
            *_q(*_ATTACH_QUERY),
        ),
    ),
    Endpoint("exec.inspect", tuple(_path("id", EXEC_REF))),
    Endpoint("containers.archive_get", (*_path("name", CONTAINER_REF), *_q(("path", INERT)))),
    Endpoint(
        "containers.create",
        (
            *_q(("name", Ref(Kind.CONTAINER, Form.NAME)), ("platform", INERT)),
            *_b(*CONFIG),
            *_b(("HostConfig", INERT)),
            *_b(*HOST_CONFIG, prefix="HostConfig."),
            *_b(
                ("NetworkingConfig", INERT),
                ("NetworkingConfig.EndpointsConfig", Ref(Kind.NETWORK, Form.MAP_KEYS)),
            ),
            *_b(*ENDPOINT_SETTINGS, prefix="NetworkingConfig.EndpointsConfig.*."),
            *_legacy_host_config(),
        ),
    ),
    Endpoint("containers.kill", (*_path("name", CONTAINER_REF), *_q(("signal", INERT)))),
    Endpoint("containers.pause", tuple(_path("name", CONTAINER_REF))),
    Endpoint("containers.unpause", tuple(_path("name", CONTAINER_REF))),
    Endpoint(
        "containers.restart",
        (*_path("name", CONTAINER_REF), *_q(("t", INERT), ("signal", INERT, _V[42]))),
    ),
    Endpoint(
        "containers.start",
        (
            *_path("name", CONTAINER_REF),
            *_q(
                ("detachKeys", INERT),
                # Not in the specs: the experimental checkpoint restore dockerd reads.
                ("checkpoint", _rule(_CHECKPOINTS)),
                ("checkpoint-dir", _rule(_CHECKPOINTS)),
            ),
        ),
    ),
    Endpoint(
        "containers.stop",
        (*_path("name", CONTAINER_REF), *_q(("t", INERT), ("signal", INERT, _V[42]))),
    ),
    Endpoint("containers.wait", (*_path("name", CONTAINER_REF), *_q(("condition", INERT)))),
    Endpoint("containers.resize", (*_path("name", CONTAINER_REF), *_q(("h", INERT), ("w", INERT)))),
    Endpoint(
        "containers.attach",
        (
            *_path("name", CONTAINER_REF),
            *_q(*_ATTACH_QUERY),
        ),
    ),
    # Removed in 1.24 (refused below it by system.api-version); dockerd answers 404 above.
    Endpoint("containers.copy", (*_path("name", CONTAINER_REF), *_b(("Resource", INERT)))),
    Endpoint(
        "containers.exec",
        (
            *_path("name", CONTAINER_REF),
            *_b(
                ("AttachStdin", INERT),
                ("AttachStdout", INERT),
                ("AttachStderr", INERT),
                ("ConsoleSize", INERT, _V[42]),
                ("DetachKeys", INERT),
                ("Tty", INERT),
                ("Env", INERT),
                ("Cmd", INERT),
                ("Privileged", _rule("exec.privileged")),
                ("User", _rule("exec.non-root-user")),
                ("WorkingDir", _rule("exec.proc-workdir")),
                # Not in the specs; Go's ExecConfig has it (the CLI sends "Detach": false).
                ("Detach", INERT),
                # Sent by docker-py (exec_create); dockerd takes the container from the path.
                ("Container", Inert("ignored by dockerd")),
            ),
        ),
    ),
    Endpoint(
        "exec.start",
        (
            *_path("name", EXEC_REF),
            *_b(("Detach", INERT), ("Tty", INERT), ("ConsoleSize", INERT, _V[42])),
        ),
    ),
    Endpoint("exec.resize", (*_path("name", EXEC_REF), *_q(("h", INERT), ("w", INERT)))),
    Endpoint(
        "containers.rename",
        (*_path("name", CONTAINER_REF), *_q(("name", Ref(Kind.CONTAINER, Form.NAME)))),
    ),
    Endpoint(
        "containers.update",
        (
            *_path("name", CONTAINER_REF),
            *_b(*RESOURCES),
            *_b(
                ("RestartPolicy", INERT),
                ("RestartPolicy.Name", INERT),
                ("RestartPolicy.MaximumRetryCount", INERT),
            ),
        ),
    ),
    Endpoint("containers.prune", tuple(_q(("filters", FILTERS["containers"])))),
    Endpoint(
        "images.commit",
        (
            *_q(
                ("container", CONTAINER_REF),
                ("repo", Ref(Kind.IMAGE, Form.REPO)),
                ("tag", Ref(Kind.IMAGE, Form.TAG)),
                ("comment", INERT),
                ("author", INERT),
                ("pause", INERT),
                ("changes", Ref(Kind.IMAGE, Form.CHANGES, ("containers.proc-workdir",))),
            ),
            *_b(*CONFIG),
        ),
    ),
    Endpoint(
        "containers.archive_put",
        (
            *_path("name", CONTAINER_REF),
            *_q(("path", INERT), ("noOverwriteDirNonDir", INERT), ("copyUIDGID", INERT)),
            Field("body", "<stream>", Inert("a tar archive unpacked into the container")),
        ),
    ),
    Endpoint(
        "containers.delete",
        (*_path("name", CONTAINER_REF), *_q(("v", INERT), ("force", INERT), ("link", INERT))),
    ),
    # images
    Endpoint(
        "images.list",
        tuple(
            _q(
                ("all", INERT),
                ("filters", FILTERS["images"]),
                ("digests", INERT),
                ("shared-size", INERT, _V[42]),
                ("manifests", INERT, _V[47]),
                ("identity", INERT, _V[42]),
                # Not in the specs: the pre-1.25 `filter` (a reference pattern) dockerd
                # still reads below API 1.41.
                ("filter", Ref(Kind.IMAGE, Form.FILTERS)),
                ("only_ids", Inert("sent by docker-py; ignored by dockerd")),
            )
        ),
    ),
    Endpoint(
        "images.search",
        tuple(
            _q(
                ("term", Ref(Kind.IMAGE, Form.REPO, ("images.registry-address",))),
                ("limit", INERT),
                ("filters", INERT),
            )
        ),
    ),
    Endpoint(
        "images.get_all",
        tuple(_q(("names", Ref(Kind.IMAGE, Form.IMAGE_REF)), ("platform", INERT, _V[42]))),
    ),
    Endpoint("images.get", (*_path("name", IMAGE_REF), *_q(("platform", INERT, _V[42])))),
    Endpoint("images.history", (*_path("name", IMAGE_REF), *_q(("platform", INERT, _V[42])))),
    Endpoint(
        "images.inspect",
        (*_path("name", IMAGE_REF), *_q(("manifests", INERT, _V[48]), ("platform", INERT, _V[42]))),
    ),
    Endpoint(
        "images.attestations",
        (
            *_path("name", IMAGE_REF),
            *_q(("platform", INERT), ("type", INERT), ("statement", INERT)),
        ),
        since=_V[52],
    ),
    Endpoint(
        "images.load",
        (
            *_q(("quiet", INERT), ("platform", INERT, _V[42])),
            Field("body", "<stream>", Ref(Kind.IMAGE, Form.STREAM)),
        ),
    ),
    Endpoint(
        "images.create",
        (
            *_q(
                ("fromImage", Ref(Kind.IMAGE, Form.REPO, ("images.registry-address",))),
                ("fromSrc", Ruled(("images.remote-fetch",))),
                ("repo", Ref(Kind.IMAGE, Form.REPO)),
                ("tag", Ref(Kind.IMAGE, Form.TAG)),
                ("message", INERT),
                ("platform", INERT),
                ("changes", Ref(Kind.IMAGE, Form.CHANGES, ("containers.proc-workdir",))),
            ),
            *_h(("X-Registry-Auth", _AUTH)),
            Field("body", "<stream>", Inert("the image tarball of `docker import -`")),
        ),
    ),
    Endpoint(
        "images.push",
        (
            *_path("name", Ref(Kind.IMAGE, Form.REPO, ("images.registry-address",))),
            *_q(("tag", Ref(Kind.IMAGE, Form.TAG)), ("platform", INERT, _V[42])),
            *_h(("X-Registry-Auth", _AUTH)),
        ),
    ),
    Endpoint(
        "images.tag",
        (
            *_path("name", IMAGE_REF),
            *_q(("repo", Ref(Kind.IMAGE, Form.REPO)), ("tag", Ref(Kind.IMAGE, Form.TAG))),
        ),
    ),
    Endpoint("images.prune", tuple(_q(("filters", FILTERS["images"])))),
    Endpoint(
        "images.delete",
        (
            *_path("name", IMAGE_REF),
            *_q(("force", INERT), ("noprune", INERT), ("platforms", INERT, _V[42])),
        ),
    ),
    # system
    Endpoint("system.options", ()),
    Endpoint("system.ping", ()),
    Endpoint(
        "system.events",
        tuple(
            _q(
                ("since", INERT),
                ("until", INERT),
                ("filters", Ref(Kind.CONTAINER, Form.FILTERS)),
            )
        ),
    ),
    Endpoint("system.info", ()),
    Endpoint("system.version", ()),
    Endpoint("system.df", tuple(_q(("type", INERT, _V[42]), ("verbose", INERT, _V[42])))),
    Endpoint(
        "system.auth",
        tuple(
            _b(
                ("username", INERT),
                ("password", INERT),
                ("email", INERT),
                ("serveraddress", _rule("system.auth-address")),
                # Go's AuthConfig, read by dockerd, sent by the docker CLI (not in the specs).
                ("auth", INERT),
                ("identitytoken", INERT),
                ("registrytoken", INERT),
            )
        ),
    ),
    # volumes
    Endpoint("volumes.list", tuple(_q(("filters", FILTERS["volumes"])))),
    Endpoint("volumes.inspect", tuple(_path("name", VOLUME_REF))),
    Endpoint(
        "volumes.create",
        (
            *_b(
                ("Name", Ref(Kind.VOLUME, Form.NAME)),
                ("Driver", _rule("volumes.driver")),
                ("DriverOpts", _rule("volumes.host-path")),
                ("Labels", Ruled(("tenancy.owner-label",))),
            ),
            *_cluster_volume("ClusterVolumeSpec"),
        ),
    ),
    Endpoint("volumes.prune", tuple(_q(("filters", FILTERS["volumes"])))),
    Endpoint(
        "volumes.update",
        (
            *_path("name", VOLUME_REF),
            *_q(("version", INERT)),
            *_cluster_volume("Spec"),
        ),
        since=_V[42],
    ),
    Endpoint("volumes.delete", (*_path("name", VOLUME_REF), *_q(("force", INERT)))),
    # build
    Endpoint(
        "build.build",
        (
            *_q(
                ("dockerfile", Inert("a path inside the context")),
                ("t", Ref(Kind.IMAGE, Form.REPO)),
                ("extrahosts", INERT),
                ("remote", _rule("build.remote-context")),
                ("q", INERT),
                ("nocache", INERT),
                ("cachefrom", Ref(Kind.IMAGE, Form.LIST, ("images.registry-address",))),
                ("pull", INERT),
                ("rm", INERT),
                ("forcerm", INERT),
                ("memory", Inert("a limit of the build's containers")),
                ("memswap", INERT),
                ("cpushares", INERT),
                ("cpusetcpus", INERT),
                ("cpusetmems", INERT),
                ("cpuperiod", INERT),
                ("cpuquota", INERT),
                ("buildargs", INERT),
                ("shmsize", INERT),
                ("squash", INERT),
                ("labels", Ruled(("tenancy.owner-label",))),
                ("networkmode", Ref(Kind.NETWORK, Form.NETWORK_MODE, ("build.network-host",))),
                ("platform", INERT),
                ("target", INERT),
                ("outputs", Ref(Kind.BUILD, Form.LIST, ("build.exporters",)), _V[40]),
                (
                    "version",
                    Inert("1 the classic builder; 2 BuildKit, its calls decided by build.*"),
                ),
                # Read by dockerd, not in the specs: sent by the CLIs and docker-py
                # (moby's client imageBuildOptionsToQuery).
                ("session", Ref(Kind.BUILD, Form.ID)),
                ("buildid", Ref(Kind.BUILD, Form.ID)),
                ("cgroupparent", _rule("containers.cgroup-parent")),
                ("isolation", Inert("Windows only")),
                ("ulimits", _rule("containers.resource-bounds")),
            ),
            *_h(("X-Registry-Config", _AUTH), ("Content-type", INERT)),
            Field("body", "<stream>", Ref(Kind.IMAGE, Form.STREAM)),
        ),
    ),
    Endpoint(
        "build.prune",
        tuple(
            _q(
                ("all", INERT),
                ("filters", INERT),
                ("keep-storage", INERT),
                ("reserved-space", INERT, _V[48]),
                ("max-used-space", INERT, _V[48]),
                ("min-free-space", INERT, _V[48]),
            )
        ),
    ),
    Endpoint("build.cancel", tuple(_q(("id", Ref(Kind.BUILD, Form.ID))))),
    # BuildKit's tunnels: closed by `system.session` where it is on; otherwise every call
    # inside is read by the build.* rules (gateway's BuildKit layer).
    Endpoint("session.session", (Field("body", "<stream>", Ref(Kind.BUILD, Form.STREAM)),)),
    Endpoint("grpc.grpc", (Field("body", "<stream>", Ref(Kind.BUILD, Form.STREAM)),)),
    # swarm (all closed by system.swarm)
    _closed("swarm.inspect", _SWARM),
    _closed("swarm.unlockkey", _SWARM),
    _closed("swarm.init", _SWARM),
    _closed("swarm.join", _SWARM),
    _closed("swarm.leave", _SWARM, "query:force"),
    _closed(
        "swarm.update",
        _SWARM,
        "query:version",
        "query:rotateWorkerToken",
        "query:rotateManagerToken",
        "query:rotateManagerUnlockKey",
    ),
    _closed("swarm.unlock", _SWARM),
    _closed("services.list", _SWARM, "query:filters", "query:status"),
    _closed("services.inspect", _SWARM, "path:id", "query:insertDefaults"),
    _closed("services.create", _SWARM, "header:X-Registry-Auth"),
    _closed(
        "services.update",
        _SWARM,
        "path:id",
        "query:version",
        "query:registryAuthFrom",
        "query:rollback",
        "header:X-Registry-Auth",
    ),
    _closed("services.delete", _SWARM, "path:id"),
    _closed("services.logs", _SWARM, "path:id", *(f"query:{spec[0]}" for spec in _LOGS_QUERY)),
    _closed("nodes.list", _SWARM, "query:filters"),
    _closed("nodes.inspect", _SWARM, "path:id"),
    _closed("nodes.delete", _SWARM, "path:id", "query:force"),
    _closed("nodes.update", _SWARM, "path:id", "query:version"),
    _closed("tasks.list", _SWARM, "query:filters"),
    _closed("tasks.inspect", _SWARM, "path:id"),
    _closed("tasks.logs", _SWARM, "path:id", *(f"query:{spec[0]}" for spec in _LOGS_QUERY)),
    _closed("secrets.list", _SWARM, "query:filters"),
    _closed("secrets.create", _SWARM),
    _closed("secrets.delete", _SWARM, "path:id"),
    _closed("secrets.inspect", _SWARM, "path:id"),
    _closed("secrets.update", _SWARM, "path:id", "query:version"),
    _closed("configs.list", _SWARM, "query:filters"),
    _closed("configs.create", _SWARM),
    _closed("configs.delete", _SWARM, "path:id"),
    _closed("configs.inspect", _SWARM, "path:id"),
    _closed("configs.update", _SWARM, "path:id", "query:version"),
    # plugins (all closed by system.plugins)
    _closed("plugins.list", _PLUGINS, "query:filters"),
    _closed("plugins.inspect", _PLUGINS, "path:name"),
    _closed("plugins.privileges", _PLUGINS, "query:remote"),
    _closed("plugins.delete", _PLUGINS, "path:name", "query:force"),
    _closed("plugins.enable", _PLUGINS, "path:name", "query:timeout"),
    _closed("plugins.disable", _PLUGINS, "path:name", "query:force"),
    _closed("plugins.pull", _PLUGINS, "query:remote", "query:name", "header:X-Registry-Auth"),
    _closed("plugins.push", _PLUGINS, "path:name"),
    _closed("plugins.upgrade", _PLUGINS, "path:name", "query:remote", "header:X-Registry-Auth"),
    _closed("plugins.set", _PLUGINS, "path:name"),
    _closed("plugins.create", _PLUGINS, "query:name"),
    # distribution
    Endpoint(
        "distribution.inspect",
        (
            *_path("name", Ref(Kind.IMAGE, Form.REPO, ("images.registry-address",))),
            *_h(("X-Registry-Auth", _AUTH)),
        ),
    ),
    # networks
    Endpoint("networks.list", tuple(_q(("filters", FILTERS["networks"])))),
    Endpoint(
        "networks.inspect",
        (*_path("id", NETWORK_REF), *_q(("verbose", INERT), ("scope", INERT))),
    ),
    Endpoint(
        "networks.create",
        tuple(
            _b(
                ("Name", Ref(Kind.NETWORK, Form.NAME)),
                ("CheckDuplicate", Inert("ignored since 1.44 (names are always unique)")),
                ("Driver", _rule("networks.driver")),
                ("Scope", _rule("networks.driver")),
                ("Internal", INERT),
                ("Attachable", INERT),
                ("Ingress", _rule("networks.driver")),
                ("ConfigOnly", _rule("networks.driver")),
                ("ConfigFrom", Ref(Kind.NETWORK, Form.NAME, ("networks.driver",))),
                ("ConfigFrom.Network", Ref(Kind.NETWORK, Form.NAME, ("networks.driver",))),
                ("IPAM", _rule("networks.subnet")),
                ("IPAM.Driver", _rule("networks.driver-options")),
                ("IPAM.Config", _rule("networks.subnet")),
                ("IPAM.Config[].Subnet", _rule("networks.subnet")),
                ("IPAM.Config[].IPRange", _rule("networks.subnet")),
                ("IPAM.Config[].Gateway", _rule("networks.subnet")),
                ("IPAM.Config[].AuxiliaryAddresses", _rule("networks.subnet")),
                ("IPAM.Options", _rule("networks.driver-options")),
                ("EnableIPv4", INERT, _V[47]),
                ("EnableIPv6", INERT),
                ("Options", _rule("networks.driver-options")),
                ("Labels", Ruled(("tenancy.owner-label",))),
            )
        ),
    ),
    Endpoint(
        "networks.connect",
        (
            *_path("id", NETWORK_REF),
            *_b(("Container", CONTAINER_REF), ("EndpointConfig", INERT)),
            *_b(*ENDPOINT_SETTINGS, prefix="EndpointConfig."),
        ),
    ),
    Endpoint(
        "networks.disconnect",
        (*_path("id", NETWORK_REF), *_b(("Container", CONTAINER_REF), ("Force", INERT))),
    ),
    Endpoint("networks.prune", tuple(_q(("filters", FILTERS["networks"])))),
    Endpoint("networks.delete", tuple(_path("id", NETWORK_REF))),
)

TABLE: Final[Mapping[str, Endpoint]] = {entry.route: entry for entry in ENDPOINT_FIELDS}
"""route name -> its inputs."""


# --- look-ups -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """What the guard checks of one route: the known query keys, the body's tree."""

    query: frozenset[str]
    closed: bool
    json_body: bool
    # Folded dotted body paths that are listed (a node's children are `path.child`,
    # `path[]...`, `path.*...`).
    body: frozenset[str]


def _fold_path(name: str) -> str:
    return ".".join(fold(part) for part in name.split("."))


@cache
def shape(route: str) -> Shape | None:
    entry = TABLE.get(route)
    if entry is None:
        return None
    closed = any(isinstance(item.treatment, Closed) for item in entry.fields)
    body = frozenset(
        _fold_path(item.name)
        for item in entry.fields
        if item.place == "body" and not item.name.startswith("<")
    )
    return Shape(
        query=frozenset(item.name for item in entry.fields if item.place == "query"),
        closed=closed,
        json_body=bool(body) and not closed,
        body=body,
    )


def is_closed(route: str) -> bool:
    """Whether the table lists this route as closed whole by a policy rule."""
    known = shape(route)
    return known is not None and known.closed


def reads_json_body(route: str) -> bool:
    """Whether the table lists JSON body fields of this route (so its body is read)."""
    known = shape(route)
    return known is not None and known.json_body


def fields_of(route: str, place: Place | None = None) -> tuple[Field, ...]:
    entry = TABLE.get(route)
    if entry is None:
        return ()
    return tuple(item for item in entry.fields if place is None or item.place == place)


def find(route: str, place: Place, name: str) -> Field | None:
    """The table's entry for one input (body paths matched as Go matches field names)."""
    wanted = _fold_path(name) if place == "body" else name
    for item in fields_of(route, place):
        if (_fold_path(item.name) if place == "body" else item.name) == wanted:
            return item
    return None


def unmodeled(route: str, query: Mapping[str, list[str]], body: object) -> str | None:
    """The first query parameter or JSON body field the table does not list, named.

    Query keys are case-sensitive (Go's `r.Form`); body keys are matched the way Go
    matches struct fields (case-insensitively, with Unicode folding). Free-form maps
    (Labels, Options, ...) have no listed children and are not walked. None when
    everything is listed (or the route is unknown: `system.unknown-endpoint` refuses it).
    """
    known = shape(route)
    if known is None:
        return None
    for key in query:
        if key not in known.query and not known.closed:
            return f"the query parameter {key!r}"
    if body is None or not known.json_body:
        return None
    return _walk(body, "", known.body)


def _walk(value: object, path: str, listed: frozenset[str], shown: str = "") -> str | None:
    """`path` is the folded dotted path (as listed), `shown` the client's spelling."""
    if isinstance(value, dict):
        star = f"{path}.*" if path else "*"
        if _has_children(star, listed):
            for item in value.values():
                found = _walk(item, star, listed, f"{shown}.*")
                if found is not None:
                    return found
            return None
        if path and not _has_children(path, listed):
            return None  # a free-form map or a leaf: its keys are values, not fields
        for key, item in value.items():
            child = f"{path}.{fold(key)}" if path else fold(key)
            child_shown = f"{shown}.{key}" if shown else key
            if child not in listed:
                return f"the body field {child_shown!r}"
            found = _walk(item, child, listed, child_shown)
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        items = f"{path}[]"
        if _has_children(items, listed):
            for item in value:
                found = _walk(item, items, listed, f"{shown}[]")
                if found is not None:
                    return found
    return None


@lru_cache(maxsize=4096)
def _has_children_cached(prefix: str, listed: frozenset[str]) -> bool:
    return any(name.startswith((prefix + ".", prefix + "[]")) for name in listed)


def _has_children(prefix: str, listed: frozenset[str]) -> bool:
    return _has_children_cached(prefix, listed)


@cache
def references(route: str) -> tuple[Field, ...]:
    """The inputs of a route that name objects."""
    return tuple(item for item in fields_of(route) if isinstance(item.treatment, Ref))
