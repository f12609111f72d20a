"""The BuildKit messages and fields the guard reads, decoded from protobuf's wire format.

The project's own definitions: only the fields a decision needs, with the field
numbers of BuildKit's .proto files (api/services/control/control.proto,
solver/pb/ops.proto, frontend/gateway/pb/gateway.proto). Every other field is
skipped, but still has to be well-formed: a message that does not parse is refused
by the caller (`WireError`). Singular fields keep their last occurrence, repeated
and map fields every one, as Go's decoder does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from dockmoat.buildkit.wire import (
    MAX_DEPTH,
    WireError,
    as_bytes,
    as_enum,
    as_int,
    as_int64,
    as_text,
    bytes_map_entry,
    fields,
    string_map_entry,
)

NET_HOST: Final = 1
SECURITY_INSECURE: Final = 1
MOUNT_CACHE: Final = 3


@dataclass(frozen=True, slots=True)
class Exec:
    """pb.ExecOp (with its Meta) or what NewContainer/ExecProcess ask for."""

    network: int = 0
    security: int = 0
    extra_hosts: tuple[str, ...] = ()
    cgroup_parent: str = ""
    ulimits: tuple[tuple[str, int, int], ...] = ()
    devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Source:
    """pb.SourceOp: `docker-image://...`, `https://...`, `git://...`, `local://...`."""

    identifier: str
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Definition:
    """pb.Definition: every op, nested build ops' definitions flattened in."""

    execs: tuple[Exec, ...] = ()
    sources: tuple[Source, ...] = ()


@dataclass(frozen=True, slots=True)
class Exporter:
    type: str
    attrs: dict[str, str]


@dataclass(frozen=True, slots=True)
class CacheEntry:
    type: str
    attrs: dict[str, str]


@dataclass(frozen=True, slots=True)
class ControlSolve:
    """moby.buildkit.v1.SolveRequest."""

    ref: str = ""
    session: str = ""
    frontend: str = ""
    frontend_attrs: dict[str, str] = field(default_factory=dict)
    entitlements: tuple[str, ...] = ()
    exporters: tuple[Exporter, ...] = ()
    cache_exports: tuple[CacheEntry, ...] = ()
    cache_imports: tuple[CacheEntry, ...] = ()
    definitions: tuple[Definition, ...] = ()
    source_policy_session: str = ""
    appended: bytes = b""
    """Fields the guard appends to the message before it goes on (its source policy)."""


@dataclass(frozen=True, slots=True)
class BridgeSolve:
    """moby.buildkit.v1.frontend.SolveRequest (LLBBridge.Solve)."""

    frontend: str = ""
    frontend_opt: dict[str, str] = field(default_factory=dict)
    cache_imports: tuple[CacheEntry, ...] = ()
    definitions: tuple[Definition, ...] = ()


@dataclass(frozen=True, slots=True)
class RefOnly:
    """A request that names a build (Status, ListenBuildHistory, UpdateBuildHistory)."""

    ref: str = ""


@dataclass(frozen=True, slots=True)
class ImageResolve:
    """LLBBridge.ResolveImageConfig / ResolveSourceMeta: what the daemon will fetch."""

    sources: tuple[Source, ...] = ()
    session: str = ""


@dataclass(frozen=True, slots=True)
class ContainerStart:
    """LLBBridge.NewContainer, or the Init of an ExecProcess stream."""

    exec: Exec = Exec()


@dataclass(frozen=True, slots=True)
class ContentRead:
    """containerd's InfoRequest / ReadContentRequest: digest 1."""

    digest: str = ""


@dataclass(frozen=True, slots=True)
class Opaque:
    """A message the guard passes on without reading fields (still well-formed)."""


@dataclass(frozen=True, slots=True)
class DockerfileRead:
    """The Dockerfile a session sent the daemon for a `/build?version=2` build
    (read by `filesync.DockerfileWatch` from the client's answers)."""

    session: str
    name: str
    text: bytes
    advisory: bool = False  # a buildx Solve's: refused only for what the policy refuses
    unreadable: bool = False  # (advisory) the packets could not be followed: pass it


Message = (
    ControlSolve
    | BridgeSolve
    | RefOnly
    | ImageResolve
    | ContainerStart
    | ContentRead
    | DockerfileRead
    | Opaque
)


def _string_map(into: dict[str, str], raw: bytes) -> None:
    key, value = string_map_entry(raw)
    into[key] = value


def _nested(raw: bytes, depth: int) -> bytes:
    if depth > MAX_DEPTH:
        raise WireError("messages nested too deeply")
    return raw


def host_ip(raw: bytes) -> str:
    host = ip = ""
    for item in fields(raw):
        if item.number == 1:
            host = as_text(item)
        elif item.number == 2:
            ip = as_text(item)
    return f"{host}:{ip}"


def ulimit(raw: bytes) -> tuple[str, int, int]:
    name = ""
    soft = hard = 0
    for item in fields(raw):
        if item.number == 1:
            name = as_text(item)
        elif item.number == 2:
            soft = as_int64(item)
        elif item.number == 3:
            hard = as_int64(item)
    return name, soft, hard


@dataclass(slots=True)
class _Meta:
    extra_hosts: list[str] = field(default_factory=list)
    ulimits: list[tuple[str, int, int]] = field(default_factory=list)
    cgroup_parent: str = ""


def meta(raw: bytes) -> _Meta:
    """pb.Meta: extraHosts 6, ulimit 9, cgroupParent 10."""
    out = _Meta()
    for item in fields(raw):
        if item.number == 6:
            out.extra_hosts.append(host_ip(as_bytes(item)))
        elif item.number == 9:
            out.ulimits.append(ulimit(as_bytes(item)))
        elif item.number == 10:
            out.cgroup_parent = as_text(item)
    return out


def exec_op(raw: bytes) -> Exec:
    """pb.ExecOp: meta 1, mounts 2, network 3, security 4, cdiDevices 6."""
    found = _Meta()
    network = security = 0
    devices: list[str] = []
    for item in fields(raw):
        if item.number == 1:
            found = meta(as_bytes(item))
        elif item.number == 2:
            for _ in fields(as_bytes(item)):
                pass  # mounts: well-formed; their kinds are the daemon's (cache, secret)
        elif item.number == 3:
            network = as_enum(item)
        elif item.number == 4:
            security = as_enum(item)
        elif item.number == 6:
            name = ""
            for sub in fields(as_bytes(item)):
                if sub.number == 1:
                    name = as_text(sub)
            devices.append(name)
    return Exec(
        network=network,
        security=security,
        extra_hosts=tuple(found.extra_hosts),
        cgroup_parent=found.cgroup_parent,
        ulimits=tuple(found.ulimits),
        devices=tuple(devices),
    )


def source_op(raw: bytes) -> Source:
    """pb.SourceOp: identifier 1, attrs 2."""
    identifier = ""
    attrs: dict[str, str] = {}
    for item in fields(raw):
        if item.number == 1:
            identifier = as_text(item)
        elif item.number == 2:
            _string_map(attrs, as_bytes(item))
    return Source(identifier, attrs)


def _op(raw: bytes, execs: list[Exec], sources: list[Source], depth: int) -> None:
    """pb.Op: exec 2, source 3, build 5 (its def 3 is a nested Definition)."""
    for item in fields(raw):
        if item.number == 2:
            execs.append(exec_op(as_bytes(item)))
        elif item.number == 3:
            sources.append(source_op(as_bytes(item)))
        elif item.number == 5:
            for sub in fields(as_bytes(item)):
                if sub.number == 3:
                    _definition(_nested(as_bytes(sub), depth + 1), execs, sources, depth + 1)


def _definition(raw: bytes, execs: list[Exec], sources: list[Source], depth: int) -> None:
    for item in fields(raw):
        if item.number == 1:
            _op(as_bytes(item), execs, sources, depth)


def definition(raw: bytes, depth: int = 0) -> Definition:
    """pb.Definition: def 1 (each a marshalled pb.Op)."""
    execs: list[Exec] = []
    sources: list[Source] = []
    _definition(_nested(raw, depth), execs, sources, depth)
    return Definition(tuple(execs), tuple(sources))


def _attrs_entry(raw: bytes) -> tuple[str, dict[str, str]]:
    """Exporter / CacheOptionsEntry: type 1, attrs 2."""
    kind = ""
    attrs: dict[str, str] = {}
    for item in fields(raw):
        if item.number == 1:
            kind = as_text(item)
        elif item.number == 2:
            _string_map(attrs, as_bytes(item))
    return kind, attrs


def _cache_options(raw: bytes, exports: list[CacheEntry], imports: list[CacheEntry]) -> None:
    """CacheOptions: ExportRefDeprecated 1, ImportRefsDeprecated 2, Exports 4, Imports 5."""
    for item in fields(raw):
        if item.number == 1:
            ref = as_text(item)
            if ref:
                exports.append(CacheEntry("registry", {"ref": ref}))
        elif item.number == 2:
            imports.append(CacheEntry("registry", {"ref": as_text(item)}))
        elif item.number == 4:
            exports.append(CacheEntry(*_attrs_entry(as_bytes(item))))
        elif item.number == 5:
            imports.append(CacheEntry(*_attrs_entry(as_bytes(item))))


def control_solve(raw: bytes) -> ControlSolve:
    """moby.buildkit.v1.SolveRequest (control.proto)."""
    ref = session = frontend = exporter_deprecated = policy_session = ""
    exporter_attrs: dict[str, str] = {}
    frontend_attrs: dict[str, str] = {}
    entitlements: list[str] = []
    exporters: list[Exporter] = []
    cache_exports: list[CacheEntry] = []
    cache_imports: list[CacheEntry] = []
    definitions: list[Definition] = []
    for item in fields(raw):
        number = item.number
        if number == 1:
            ref = as_text(item)
        elif number == 2:
            definitions.append(definition(as_bytes(item)))
        elif number == 3:
            exporter_deprecated = as_text(item)
        elif number == 4:
            _string_map(exporter_attrs, as_bytes(item))
        elif number == 5:
            session = as_text(item)
        elif number == 6:
            frontend = as_text(item)
        elif number == 7:
            _string_map(frontend_attrs, as_bytes(item))
        elif number == 8:
            _cache_options(as_bytes(item), cache_exports, cache_imports)
        elif number == 9:
            entitlements.append(as_text(item))
        elif number == 10:
            _key, value = bytes_map_entry(as_bytes(item))
            definitions.append(definition(value))
        elif number == 13:
            exporters.append(Exporter(*_attrs_entry(as_bytes(item))))
        elif number == 15:
            policy_session = as_text(item)
        elif number in (11, 14, 16, 17):
            as_int(item)
    if not exporters and exporter_deprecated:
        exporters.append(Exporter(exporter_deprecated, exporter_attrs))
    return ControlSolve(
        ref=ref,
        session=session,
        frontend=frontend,
        frontend_attrs=frontend_attrs,
        entitlements=tuple(entitlements),
        exporters=tuple(exporters),
        cache_exports=tuple(cache_exports),
        cache_imports=tuple(cache_imports),
        definitions=tuple(definitions),
        source_policy_session=policy_session,
    )


def bridge_solve(raw: bytes) -> BridgeSolve:
    """moby.buildkit.v1.frontend.SolveRequest (gateway.proto)."""
    frontend = ""
    opt: dict[str, str] = {}
    imports: list[CacheEntry] = []
    definitions: list[Definition] = []
    for item in fields(raw):
        number = item.number
        if number == 1:
            definitions.append(definition(as_bytes(item)))
        elif number == 2:
            frontend = as_text(item)
        elif number == 3:
            _string_map(opt, as_bytes(item))
        elif number == 12:
            imports.append(CacheEntry(*_attrs_entry(as_bytes(item))))
        elif number == 13:
            _key, value = bytes_map_entry(as_bytes(item))
            definitions.append(definition(value))
    return BridgeSolve(frontend, opt, tuple(imports), tuple(definitions))


def ref_only(raw: bytes, number: int) -> RefOnly:
    ref = ""
    for item in fields(raw):
        if item.number == number:
            ref = as_text(item)
    return RefOnly(ref)


def resolve_image_config(raw: bytes) -> ImageResolve:
    """ResolveImageConfigRequest: Ref 1, SessionID 6."""
    ref = session = ""
    for item in fields(raw):
        if item.number == 1:
            ref = as_text(item)
        elif item.number == 6:
            session = as_text(item)
    return ImageResolve((Source("docker-image://" + ref),), session)


def resolve_source_meta(raw: bytes) -> ImageResolve:
    """ResolveSourceMetaRequest: Source 1 (a pb.SourceOp)."""
    sources: list[Source] = []
    for item in fields(raw):
        if item.number == 1:
            sources.append(source_op(as_bytes(item)))
    return ImageResolve(tuple(sources))


def new_container(raw: bytes) -> ContainerStart:
    """NewContainerRequest: Network 3, extraHosts 6."""
    network = 0
    hosts: list[str] = []
    for item in fields(raw):
        if item.number == 3:
            network = as_enum(item)
        elif item.number == 6:
            hosts.append(host_ip(as_bytes(item)))
    return ContainerStart(Exec(network=network, extra_hosts=tuple(hosts)))


def exec_message(raw: bytes) -> ContainerStart | Opaque:
    """ExecMessage: Init 2 (InitMessage: Meta 2, Security 5); the rest is stdio."""
    for item in fields(raw):
        if item.number == 2:
            security = 0
            found = _Meta()
            for sub in fields(as_bytes(item)):
                if sub.number == 2:
                    found = meta(as_bytes(sub))
                elif sub.number == 5:
                    security = as_enum(sub)
            return ContainerStart(
                Exec(
                    security=security,
                    extra_hosts=tuple(found.extra_hosts),
                    cgroup_parent=found.cgroup_parent,
                    ulimits=tuple(found.ulimits),
                )
            )
    return Opaque()


def well_formed(raw: bytes) -> Opaque:
    """Any other message: parsed to the end, nothing kept."""
    for _ in fields(raw):
        pass
    return Opaque()


def content_digest(raw: bytes) -> ContentRead:
    digest = ""
    for item in fields(raw):
        if item.number == 1:
            digest = as_text(item)
    return ContentRead(digest)


DIGEST = re.compile(rb"sha256:[0-9a-f]{64}")


def digests_in(raw: bytes) -> set[str]:
    """Every digest a message mentions (a build record's blobs: logs, provenance, results)."""
    return {found.decode() for found in DIGEST.findall(raw)}


def history_event_ref(raw: bytes) -> str:
    """BuildHistoryEvent: record 2 -> BuildHistoryRecord.Ref 1."""
    ref = ""
    for item in fields(raw):
        if item.number == 2:
            for sub in fields(as_bytes(item)):
                if sub.number == 1:
                    ref = as_text(sub)
    return ref
