"""Every gRPC call the guard lets through, per tunnel, with the decoder of its requests.

`/grpc`: the client calls the daemon's BuildKit (Control, the frontend gateway
LLBBridge, health). `/session`: the daemon calls the client's session services
(files, secrets, credentials, SSH, uploads, exporters, health). A path not in the
table of its tunnel is refused (UNIMPLEMENTED would let clients probe; the guard
answers PERMISSION_DENIED naming what is open).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from dockmoat.buildkit import messages
from dockmoat.buildkit.messages import Message

Tunnel = Literal["grpc", "session"]
Decoder = Callable[[bytes], Message]

CONTROL: Final = "moby.buildkit.v1.Control"
BRIDGE: Final = "moby.buildkit.v1.frontend.LLBBridge"
HEALTH: Final = "grpc.health.v1.Health"
#: containerd's content store, which BuildKit serves on the same connection: clients
#: read build records' blobs (provenance, logs) from it. Read-only calls only.
CONTENT: Final = "containerd.services.content.v1.Content"


@dataclass(frozen=True, slots=True)
class Method:
    service: str
    name: str
    decode: Decoder

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def short(self) -> str:
        """`Control.Solve`, `LLBBridge.ReadFile`, `FileSync.DiffCopy`."""
        return f"{self.service.rsplit('.', 1)[-1]}.{self.name}"


def _ref1(raw: bytes) -> Message:
    return messages.ref_only(raw, 1)


def _ref2(raw: bytes) -> Message:
    return messages.ref_only(raw, 2)


_OPAQUE: Final[Decoder] = messages.well_formed


def _table(*methods: Method) -> dict[str, Method]:
    return {method.path: method for method in methods}


GRPC_METHODS: Final = _table(
    Method(CONTROL, "Solve", messages.control_solve),
    Method(CONTROL, "Status", _ref1),
    Method(CONTROL, "ListWorkers", _OPAQUE),
    Method(CONTROL, "Info", _OPAQUE),
    Method(CONTROL, "DiskUsage", _OPAQUE),
    Method(CONTROL, "Prune", _OPAQUE),
    Method(CONTROL, "ListenBuildHistory", _ref2),
    Method(CONTROL, "UpdateBuildHistory", _ref1),
    Method(BRIDGE, "ResolveImageConfig", messages.resolve_image_config),
    Method(BRIDGE, "ResolveSourceMeta", messages.resolve_source_meta),
    Method(BRIDGE, "Solve", messages.bridge_solve),
    Method(BRIDGE, "ReadFile", _OPAQUE),
    Method(BRIDGE, "ReadDir", _OPAQUE),
    Method(BRIDGE, "StatFile", _OPAQUE),
    Method(BRIDGE, "Evaluate", _OPAQUE),
    Method(BRIDGE, "Ping", _OPAQUE),
    Method(BRIDGE, "Return", _OPAQUE),
    Method(BRIDGE, "Inputs", _OPAQUE),
    Method(BRIDGE, "NewContainer", messages.new_container),
    Method(BRIDGE, "ReleaseContainer", _OPAQUE),
    Method(BRIDGE, "ExecProcess", messages.exec_message),
    Method(BRIDGE, "ReadFileContainer", _OPAQUE),
    Method(BRIDGE, "ReadDirContainer", _OPAQUE),
    Method(BRIDGE, "StatFileContainer", _OPAQUE),
    Method(BRIDGE, "Warn", _OPAQUE),
    Method(HEALTH, "Check", _OPAQUE),
    Method(CONTENT, "Info", messages.content_digest),
    Method(CONTENT, "Read", messages.content_digest),
)

SESSION_METHODS: Final = _table(
    Method("moby.filesync.v1.FileSync", "DiffCopy", _OPAQUE),
    Method("moby.filesync.v1.FileSync", "TarStream", _OPAQUE),
    Method("moby.filesync.v1.FileSend", "DiffCopy", _OPAQUE),
    Method("moby.filesync.v1.Auth", "Credentials", _OPAQUE),
    Method("moby.filesync.v1.Auth", "FetchToken", _OPAQUE),
    Method("moby.filesync.v1.Auth", "GetTokenAuthority", _OPAQUE),
    Method("moby.filesync.v1.Auth", "VerifyTokenAuthority", _OPAQUE),
    Method("moby.buildkit.secrets.v1.Secrets", "GetSecret", _OPAQUE),
    Method("moby.sshforward.v1.SSH", "CheckAgent", _OPAQUE),
    Method("moby.sshforward.v1.SSH", "ForwardAgent", _OPAQUE),
    Method("moby.upload.v1.Upload", "Pull", _OPAQUE),
    Method("moby.exporter.v1.Exporter", "FindExporters", _OPAQUE),
    Method("moby.exporter.v1.Exporter", "FinalizeExport", _OPAQUE),
    Method(HEALTH, "Check", _OPAQUE),
)


def lookup(tunnel: Tunnel, path: str) -> Method | None:
    table = GRPC_METHODS if tunnel == "grpc" else SESSION_METHODS
    return table.get(path)


def open_services(tunnel: Tunnel) -> str:
    table = GRPC_METHODS if tunnel == "grpc" else SESSION_METHODS
    return ", ".join(sorted({m.service.rsplit(".", 1)[-1] for m in table.values()}))
