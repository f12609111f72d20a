"""A build's Dockerfile as the daemon's BuildKit receives it over FileSync (sans-IO).

In a `/build?version=2` build (the 20.10 CLI with BuildKit, or any client that asks
for it) dockerd's built-in Dockerfile frontend fetches the Dockerfile from the
client's session: the daemon calls `FileSync.DiffCopy` with the metadata
`dir-name: dockerfile`, and the client answers with fsutil packets (fsutil's
types/wire.proto: `Packet{type 1, stat 2, ID 3, data 4}`, `Stat{path 1, mode 2,
..., modTime 6, linkname 7}`):

- a STAT per file and folder, in path order, then a STAT without a stat (the end of
  the listing); the receiver numbers them 0, 1, ... in that order;
- the receiver asks (REQ, by number) for each regular file whose stat differs from
  its cached copy, and the client sends it as DATA packets with that number, then an
  empty DATA (the file's end);
- FIN ends the call. Files missing from the listing are deleted from the copy.

`DockerfileWatch` follows the client's packets of one such call and says, packet by
packet, whether to forward it, hold it, or hold it and decide the Dockerfile now.
Everything from the Dockerfile's first DATA to its end is held, so the daemon has
none of it before the guard decided; the Dockerfile's STAT gets a modification time
of the guard's own, so the daemon never keeps a cached copy checked for another
build. A Dockerfile that is not a plain file reached through plain folders, or that
is missing from the listing, ends the call (fail closed), as does anything the
packets say that could be read two ways. A refused call's daemon gets the reason as an
ERR packet (what a sender whose walk failed sends) in place of what was held, then the
gRPC error: given the gRPC error alone, dockerd's receiver sometimes reported its own
cancellation ("failed to read dockerfile: context canceled") instead of the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from dockmoat.api.bodies import plain_path
from dockmoat.buildkit import wire
from dockmoat.buildkit.messages import DockerfileRead
from dockmoat.buildkit.relay import Watched
from dockmoat.buildkit.wire import WireError

FILESYNC_DIFFCOPY: Final = "/moby.filesync.v1.FileSync/DiffCopy"
FILESYNC_TARSTREAM: Final = "/moby.filesync.v1.FileSync/TarStream"
DIR_NAME: Final = "dir-name"
#: The local name under which BuildKit's Dockerfile frontend fetches the Dockerfile.
DOCKERFILE_DIR: Final = "dockerfile"
MAX_DOCKERFILE: Final = 1 << 20
"""The most of a Dockerfile (and of what comes with it while it is held) read."""

DEFAULT_NAME: Final = "Dockerfile"
DEFAULT_LOWER: Final = "dockerfile"
# fsutil's packet types.
STAT: Final = 0
DATA: Final = 2
ERR: Final = 4
MAX_ERROR: Final = 4096
"""The most of a refusal's message sent in an error packet."""
# Go's os.FileMode bits (fsutil sends fi.Mode()).
MODE_DIR: Final = 1 << 31
MODE_TYPE: Final = MODE_DIR | 1 << 27 | 1 << 26 | 1 << 25 | 1 << 24 | 1 << 21 | 1 << 19


class FileSyncRefused(ValueError):
    """Packets the guard will not pass on (the call ends with this message)."""


@dataclass(frozen=True, slots=True)
class Packet:
    type: int
    stat: bytes | None  # the raw Stat (every occurrence, merged as protobuf does); None: absent
    id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Stat:
    path: str
    mode: int
    linkname: str


def packet(raw: bytes) -> Packet:
    """One fsutil Packet (the last value of a scalar wins; stats are merged)."""
    kind = 0
    stats: list[bytes] = []
    ident = 0
    data = b""
    for item in wire.fields(raw):
        if item.number == 1:
            # An enum is an int32 to Go: the varint's low 32 bits (a type with high bits
            # set is DATA to the daemon when its low bits say so).
            kind = wire.as_int(item) & 0xFFFFFFFF
            kind = kind - (1 << 32) if kind >= 1 << 31 else kind
        elif item.number == 2:
            stats.append(wire.as_bytes(item))
        elif item.number == 3:
            ident = wire.as_int(item) & 0xFFFFFFFF
        elif item.number == 4:
            data = wire.as_bytes(item)
    return Packet(kind, b"".join(stats) if stats else None, ident, data)


def error_packet(message: str) -> bytes:
    """An fsutil ERR packet (what a sender whose walk failed sends): the receiver ends
    the copy with "error from sender: <message>"."""
    data = message.encode("utf-8", "replace")[:MAX_ERROR]
    return wire.varint(1 << 3 | wire.VARINT) + wire.varint(ERR) + wire.len_field(4, data)


def stat(raw: bytes) -> Stat:
    path = ""
    mode = 0
    linkname = ""
    for item in wire.fields(raw):
        if item.number == 1:
            path = wire.as_text(item)
        elif item.number == 2:
            mode = wire.as_int(item) & 0xFFFFFFFF
        elif item.number == 7:
            linkname = wire.as_text(item)
    return Stat(path, mode, linkname)


def with_mod_time(raw: bytes, stamp: int) -> bytes:
    """The packet with its stat's modTime (field 6) set to `stamp`: a second `stat`
    occurrence, which protobuf merges into the first."""
    return raw + wire.len_field(2, wire.varint(6 << 3 | wire.VARINT) + wire.varint(stamp))


class DockerfileWatch:
    """The client's packets of one `dir-name: dockerfile` DiffCopy (see the module)."""

    def __init__(self, session: str, name: str, stamp: int, *, advisory: bool = False) -> None:
        # advisory (a buildx Solve's Dockerfile, whose source policy holds anyway): what
        # cannot be followed stops the watch instead of ending the call.
        self.advisory = advisory
        self.off = False
        if not plain_path(name):
            if not advisory:
                raise FileSyncRefused(f"the Dockerfile name {name[:80]!r} is not a plain path")
            self.off = True
        self.session = session
        self.name = name
        parts = name.split("/")
        self.ancestors = {"/".join(parts[:i]) for i in range(1, len(parts))}
        self.stamp = stamp
        self.index = 0
        self.target: int | None = None
        # Newer BuildKit frontends read `dockerfile` where the default `Dockerfile` is
        # missing: both are followed; the daemon must not have a choice between two.
        self.candidates = (name, DEFAULT_LOWER) if name == DEFAULT_NAME else (name,)
        self.found: dict[str, int] = {}
        self.listed = False
        self.holding = False
        self.done = False
        self.text = bytearray()

    def feed(self, raw: bytes) -> Watched:
        if self.off:
            return Watched(raw, hold=False)
        try:
            return self._feed(raw)
        except FileSyncRefused:
            if not self.advisory:
                raise
            self.off = True
            if not self.holding:
                return Watched(raw, hold=False)
            self.holding = False  # what is held goes on once this is "decided"
            return Watched(raw, hold=True, decide=self._read(unreadable=True))

    def refused(self, message: str) -> bytes:
        """The call is refused: the daemon's receiver gets the reason as a sender's error
        (relay: `AnswerWatch.refused`)."""
        return error_packet(message)

    def _read(self, *, unreadable: bool = False) -> DockerfileRead:
        return DockerfileRead(
            self.session, self.name, bytes(self.text), self.advisory, unreadable=unreadable
        )

    def _feed(self, raw: bytes) -> Watched:
        try:
            item = packet(raw)
        except WireError as error:
            raise FileSyncRefused(f"a file packet the guard cannot read ({error})") from None
        if item.type == STAT and not self.listed:
            return self._stat(raw, item)
        if item.type == DATA and self.target is not None and item.id == self.target:
            return self._data(raw, item)
        return Watched(raw, hold=self.holding)

    def _stat(self, raw: bytes, item: Packet) -> Watched:
        if item.stat is None:
            self.listed = True
            if len(self.found) > 1:
                raise FileSyncRefused(
                    f"the session sent both {' and '.join(self.found)}: which one the daemon "
                    "reads depends on its version"
                )
            if not self.found:
                raise FileSyncRefused(
                    f"the session did not send the Dockerfile {self.name!r} (a plain file)"
                )
            ((self.name, self.target),) = self.found.items()
            return Watched(raw, hold=False)
        try:
            found = stat(item.stat)
        except WireError as error:
            raise FileSyncRefused(f"a file stat the guard cannot read ({error})") from None
        index = self.index
        self.index += 1
        fallback = found.path != self.name and found.path in self.candidates
        if fallback and (found.mode & MODE_TYPE or found.linkname):
            # A `dockerfile` folder (or link) beside a Dockerfile is no Dockerfile; alone
            # it leaves the listing without one, refused at its end.
            return Watched(raw, hold=False)
        if found.path in self.candidates:
            if found.path in self.found:
                raise FileSyncRefused(f"the Dockerfile {found.path!r} is listed twice")
            if found.mode & MODE_TYPE or found.linkname:
                raise FileSyncRefused(
                    f"the Dockerfile {found.path!r} is a link or not a file: dockmoat reads a "
                    "Dockerfile that is a plain file reached through plain folders"
                )
            self.found[found.path] = index
            return Watched(with_mod_time(raw, self.stamp), hold=False)
        if found.path in self.ancestors and (found.mode & MODE_TYPE != MODE_DIR or found.linkname):
            raise FileSyncRefused(
                f"{found.path[:80]!r}, on the Dockerfile's path, is not a folder: dockmoat "
                "reads a Dockerfile that is a plain file reached through plain folders"
            )
        return Watched(raw, hold=False)

    def _data(self, raw: bytes, item: Packet) -> Watched:
        if self.done:
            raise FileSyncRefused(f"more of the Dockerfile {self.name!r} after its end")
        self.holding = True
        if not item.data:
            self.done = True
            self.holding = False
            return Watched(raw, hold=True, decide=self._read())
        self.text += item.data
        if len(self.text) > MAX_DOCKERFILE:
            raise FileSyncRefused(
                f"the Dockerfile {self.name!r} is larger than {MAX_DOCKERFILE >> 20} MiB"
            )
        return Watched(raw, hold=True)
