"""A tar archive read as it streams past, the way dockerd reads it (sans-IO, incremental).

The gateway relays a `docker build` context or a `docker load` tarball to dockerd
chunk by chunk, and must read a few of its members on the way (the Dockerfile;
manifest.json, index.json, repositories) without holding the whole body. dockerd
unpacks it with moby's pkg/archive (DecompressStream, then Go's archive/tar) and
acts once the archive has ended; its untar stops at the end-of-archive marker. So
the gateway holds back the body from the point where the archive ends until it has
decided, and this reader must find that point exactly as Go does, and read every
member as Go does. What it cannot read so is a `TarScanError` (fail closed).

As moby and Go read it:

- compression is sniffed from the first bytes (moby's DetectCompression): bzip2,
  gzip and xz are decompressed, zstd is refused (no zstd in the standard library),
  anything else is a plain tar. gzip follows Go's compress/gzip (its header checks,
  its trailer's CRC and size, concatenated members; anything else after a member is
  an error); bzip2 reads concatenated streams, as Go's compress/bzip2 does; xz is
  one stream (dockerd runs `xz -d`, which also reads concatenated streams: those
  are refused here).
- headers follow archive/tar's Reader: checksum (unsigned or signed sum), the V7,
  USTAR/PAX, GNU and star layouts, octal and base-256 numbers, PAX records
  (`path`, `linkpath`, `size`, and the checks on the others), GNU long names and
  links, the legacy `\\0` type (a directory when the name ends in "/"), and the
  types that carry no data whatever their size field says (links, devices,
  folders, FIFOs). GNU sparse members (old `S` headers and PAX sparse records) are
  refused: moby's untar refuses the `S` type, and a PAX sparse file's content is
  not its data section. PAX global headers (`g`) are checked and skipped, as moby
  skips them: they are not members here.
- the end: Go's Reader stops at the first all-zero header block (it then reads one
  more block, which must be zero too or absent). `feed` reports the end as soon as
  the first zero block has been read: dockerd, which then waits for the next block
  (or the end of the body), has not acted yet, so holding everything from there on
  is enough. The second block is not checked: when it is not zero, Go refuses the
  archive, which refuses the request anyway.
- a body that stops without the marker: at a header boundary, or inside the
  padding after a member's data, Go's Reader ends cleanly (io.EOF); anywhere else
  (inside a header, a member's data, a compressed stream) it fails
  (io.ErrUnexpectedEOF), and so does `finish` here.

Member names are cleaned as moby's untar cleans them (`/` + name, normalised,
without the leading slash; the root is ""). Decompression works in bounded steps
and stops once the archive has ended; nothing beyond the current header, the
records of a PAX or GNU long-name header, and the wanted members is kept.
"""

from __future__ import annotations

import bz2
import lzma
import posixpath
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

MemberKind = Literal["file", "dir", "symlink", "hardlink", "other"]
Compression = Literal["none", "gzip", "bzip2", "xz"]

_BLOCK: Final = 512
_ZERO_BLOCK: Final = bytes(_BLOCK)
#: archive/tar's maxSpecialFileSize: the most a PAX or GNU long-name header may carry.
_MAX_SPECIAL: Final = 1 << 20
#: The most decompressed bytes produced per step.
_STEP: Final = 1 << 16
#: The most memory the xz decoder may use (`xz -9` needs 65 MiB).
_XZ_MEMLIMIT: Final = 256 << 20
#: How many bytes decide the compression (moby: a zstd skippable frame needs 8).
_SNIFF: Final = 8

_HEADER_ONLY: Final = frozenset(b"123456")  # link, symlink, char, block, dir, fifo
_KINDS: Final[dict[int, MemberKind]] = {
    ord("0"): "file",
    ord("7"): "file",
    ord("1"): "hardlink",
    ord("2"): "symlink",
    ord("5"): "dir",
}
_PAX_LOCAL, _PAX_GLOBAL, _LONG_NAME, _LONG_LINK, _SPARSE = b"xgLKS"
_REG_A: Final = 0  # the legacy regular file type, '\0'
_MEMBER: Final = -1  # the data being read is a member's (not a PAX or GNU header's)
_DIGITS: Final = b"0123456789"
_OCTAL_DIGITS: Final = b"01234567"
_HIGH_BYTES: Final = bytes(range(0x80, 0x100))
_INT64: Final = 1 << 63


class TarScanError(ValueError):
    """A body the scanner cannot read as dockerd would (malformed, truncated, unsupported)."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str  # cleaned as moby's untar cleans it; the root is ""
    kind: MemberKind
    size: int  # bytes of data in the archive (0 for the types that carry none)
    link: str  # the target of a symlink or hardlink, else ""
    data: bytes  # the captured content (wanted files only), else b""


class TarScanner:
    """Reads a tar body, compressed or not, chunk by chunk (see the module docstring).

    `want(name)` is asked once for each member, with its cleaned name: the most bytes
    of it to capture, 0 when it is not wanted. Every wanted member, whatever its kind,
    is appended to `captured` (a file once its data has passed); a wanted file larger
    than its limit is a TarScanError. Errors are sticky: once raised, every later call
    raises the same error.
    """

    def __init__(self, want: Callable[[str], int]) -> None:
        self.captured: list[Member] = []
        self.compression: Compression = "none"
        self._tar = _TarReader(want, self.captured)
        self._sniffed = bytearray()
        self._decoder: _Decoder | None = None
        self._error: TarScanError | None = None

    @property
    def at_end(self) -> bool:
        """True once the end of the archive has been read (or the body ended cleanly)."""
        return self._tar.at_end

    def feed(self, data: bytes) -> bool:
        """Read the next bytes of the body. True when the end of the archive lies in or
        before them; the bytes after it are ignored."""
        if self._error is not None:
            raise self._error
        if self._tar.at_end:
            return True
        try:
            if self._decoder is None:
                self._sniffed += data
                if len(self._sniffed) < _SNIFF:
                    return False
                data = bytes(self._sniffed)
                self._sniffed.clear()
                self._decoder = self._start(data)
            self._push(self._decoder, data)
        except TarScanError as error:
            self._error = error
            raise
        return self._tar.at_end

    def finish(self) -> None:
        """The body has ended: a TarScanError when it ended where Go's Reader reports
        io.ErrUnexpectedEOF (see the module docstring); else the archive has ended."""
        if self._error is not None:
            raise self._error
        if self._tar.at_end:
            return
        try:
            if self._decoder is None:
                data = bytes(self._sniffed)
                self._sniffed.clear()
                if not data:
                    self._tar.at_end = True  # an empty body: an empty archive
                    return
                self._decoder = self._start(data)  # fewer bytes than a header: no end yet
                self._push(self._decoder, data)
            self._decoder.check_end()
            self._tar.check_end()
        except TarScanError as error:
            self._error = error
            raise

    def _start(self, head: bytes) -> _Decoder:
        if head.startswith(b"BZh"):
            self.compression = "bzip2"
            return _Bzip2()
        if head.startswith(b"\x1f\x8b\x08"):
            self.compression = "gzip"
            return _Gzip()
        if head.startswith(b"\xfd7zXZ\x00"):
            self.compression = "xz"
            return _Xz()
        if head.startswith(b"\x28\xb5\x2f\xfd") or (
            len(head) >= 8 and int.from_bytes(head[:4], "little") & 0xFFFFFFF0 == 0x184D2A50
        ):
            raise TarScanError("zstd-compressed bodies are not read; send it uncompressed or gzip")
        return _Plain()

    def _push(self, decoder: _Decoder, data: bytes) -> None:
        for out in decoder.decode(data):
            self._tar.feed(out)
            if self._tar.at_end:
                return  # the rest is not decompressed: dockerd reads no further


# --- the tar layer ------------------------------------------------------------------


class _TarReader:
    """archive/tar's Reader over the decompressed bytes."""

    def __init__(self, want: Callable[[str], int], captured: list[Member]) -> None:
        self.at_end = False
        self._want = want
        self._captured = captured
        self._offset = 0  # decompressed bytes read so far
        self._header = bytearray()  # the header block being read
        self._left = 0  # data bytes of the current entry still to come
        self._pad = 0  # padding bytes after them
        self._sink: bytearray | None = None  # where the data goes; None: skipped
        self._entry = _MEMBER  # the type of the header whose data is read
        self._member: tuple[str, int] = ("", 0)  # a captured file's name and size
        # What PAX and GNU long-name headers set for the next member.
        self._pax: dict[bytes, bytes] = {}
        self._long_name = b""
        self._long_link = b""

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        pos, size = 0, len(view)
        while pos < size and not self.at_end:
            if self._left:
                take = min(self._left, size - pos)
                if self._sink is not None:
                    self._sink += view[pos : pos + take]
                pos += take
                self._left -= take
                if not self._left:
                    self._entry_done()
            elif self._pad:
                take = min(self._pad, size - pos)
                pos += take
                self._pad -= take
            else:
                take = min(_BLOCK - len(self._header), size - pos)
                self._header += view[pos : pos + take]
                pos += take
                if len(self._header) == _BLOCK:
                    block = bytes(self._header)
                    self._header.clear()
                    self._on_header(block, self._offset + pos - _BLOCK)
        self._offset += pos

    def check_end(self) -> None:
        """The decompressed stream has ended: where Go ends cleanly, or an error."""
        if self._header:
            raise TarScanError(
                f"the archive ends inside the header at byte {self._offset - len(self._header)}"
            )
        if self._left:
            raise TarScanError(
                f"the archive ends inside an entry's data, {self._left} bytes short "
                f"(at byte {self._offset})"
            )
        # At a header boundary, or inside the padding after an entry's data: io.EOF.
        self.at_end = True

    def _on_header(self, block: bytes, at: int) -> None:
        if block == _ZERO_BLOCK:
            self.at_end = True
            return
        flag, name, link, size = _parse_header(block, at)
        # handleRegularFile, on the raw header.
        if flag not in _HEADER_ONLY and size < 0:
            raise TarScanError(f"the header at byte {at} has a negative size")
        if flag in (_PAX_LOCAL, _PAX_GLOBAL, _LONG_NAME, _LONG_LINK):
            if size > _MAX_SPECIAL:
                raise TarScanError(f"the {chr(flag)!r} header at byte {at} carries more than 1 MiB")
            self._begin(flag, size, bytearray())
            return
        if flag == _SPARSE:
            raise TarScanError(f"the GNU sparse member at byte {at} is not read")
        # A member: what the headers before it set, then Go's legacy-type rule.
        name, link, size = _merge_pax(self._pax, name, link, size, at)
        if self._long_name:
            name = self._long_name
        if self._long_link:
            link = self._long_link
        if any(key.startswith(b"GNU.sparse.") for key in self._pax):
            raise TarScanError(f"the PAX sparse member at byte {at} is not read")
        self._pax, self._long_name, self._long_link = {}, b"", b""
        if flag == _REG_A:
            flag = ord("5") if name.endswith(b"/") else ord("0")
        size = 0 if flag in _HEADER_ONLY else size
        if size < 0:
            raise TarScanError(f"the member at byte {at} has a negative size")
        kind = _KINDS.get(flag, "other")
        cleaned = posixpath.normpath("/" + _text(name)).lstrip("/")
        limit = self._want(cleaned)
        if limit > 0 and kind == "file":
            if size > limit:
                raise TarScanError(f"{cleaned!r} is {size} bytes, more than the {limit} read of it")
            self._member = (cleaned, size)
            self._begin(_MEMBER, size, bytearray())
            return
        if limit > 0:
            target = _text(link) if kind in ("symlink", "hardlink") else ""
            self._captured.append(Member(cleaned, kind, size, target, b""))
        self._begin(_MEMBER, size, None)

    def _begin(self, entry: int, size: int, sink: bytearray | None) -> None:
        self._entry = entry
        self._sink = sink
        self._left = size
        self._pad = -size % _BLOCK
        if not size:
            self._entry_done()

    def _entry_done(self) -> None:
        data, entry = self._sink, self._entry
        self._sink = None
        if data is None:
            return
        if entry == _MEMBER:
            name, size = self._member
            self._captured.append(Member(name, "file", size, "", bytes(data)))
        elif entry == _PAX_LOCAL:
            self._pax = _parse_pax(bytes(data))
        elif entry == _PAX_GLOBAL:
            _parse_pax(bytes(data))  # checked as Go checks it; moby skips the header
            self._pax, self._long_name, self._long_link = {}, b"", b""
        elif entry == _LONG_NAME:
            self._long_name = _c_string(bytes(data))
        else:
            self._long_link = _c_string(bytes(data))


def _parse_header(block: bytes, at: int) -> tuple[int, bytes, bytes, int]:
    """(type, name, link name, size) of a header block, as archive/tar's readHeader."""
    try:
        checksum = _octal(block[148:156])
    except TarScanError:
        raise TarScanError(f"the header at byte {at} has an unreadable checksum") from None
    rest = block[:148] + block[156:]
    unsigned = sum(rest) + 8 * ord(" ")
    signed = unsigned - 256 * (len(rest) - len(rest.translate(None, _HIGH_BYTES)))
    if checksum not in (unsigned, signed):
        raise TarScanError(f"the header at byte {at} has a bad checksum (not a tar archive?)")
    magic, version, trailer = block[257:263], block[263:265], block[508:512]
    try:
        flag = block[156]
        name = _c_string(block[0:100])
        link = _c_string(block[157:257])
        size = _numeric(block[124:136])
        for start, end in ((100, 108), (108, 116), (116, 124), (136, 148)):
            _numeric(block[start:end])  # mode, uid, gid, mtime: Go refuses them unreadable
        if magic not in (b"ustar\x00", b"ustar ") or (magic == b"ustar " and version != b" \x00"):
            return flag, name, link, size  # V7: no prefix
        _numeric(block[329:337])  # devmajor
        _numeric(block[337:345])  # devminor
        if magic == b"ustar\x00" and trailer == b"tar\x00":  # star
            prefix = _c_string(block[345:476])
            _numeric(block[476:488])  # atime
            _numeric(block[488:500])  # ctime
        elif magic == b"ustar\x00":  # USTAR, PAX
            prefix = _c_string(block[345:500])
        else:  # GNU: no prefix, unless atime/ctime are unreadable (pre-Go 1.8 writers)
            prefix = b""
            try:
                for field in (block[345:357], block[357:369]):
                    if field[0]:
                        _numeric(field)
            except TarScanError:
                legacy = _c_string(block[345:500])
                prefix = legacy if legacy.isascii() else b""
    except TarScanError as error:
        raise TarScanError(f"the header at byte {at} has {error}") from None
    if prefix:
        name = prefix + b"/" + name
    return flag, name, link, size


def _c_string(field: bytes) -> bytes:
    end = field.find(b"\x00")
    return field if end < 0 else field[:end]


def _numeric(field: bytes) -> int:
    """archive/tar's parseNumeric: base-256 when the first bit is set, else octal."""
    if field and field[0] & 0x80:
        invert = 0xFF if field[0] & 0x40 else 0
        value = 0
        for index, byte in enumerate(field):
            byte ^= invert
            if index == 0:
                byte &= 0x7F
            if value >> 56:
                raise TarScanError("a base-256 number that overflows")
            value = value << 8 | byte
        if value >> 63:
            raise TarScanError("a base-256 number that overflows")
        return ~value if invert else value
    return _octal(field)


def _octal(field: bytes) -> int:
    """archive/tar's parseOctal (spaces and NULs around, then digits up to a NUL)."""
    digits = _c_string(field.strip(b" \x00"))
    if not digits:
        return 0
    if digits.translate(None, _OCTAL_DIGITS):
        raise TarScanError(f"an unreadable number {digits!r}")
    value = int(digits, 8)
    if value >> 64:
        raise TarScanError(f"a number out of range {digits!r}")
    return value - (1 << 64) if value >= _INT64 else value  # Go's int64(uint64)


def _go_int(text: bytes) -> int | None:
    """strconv.ParseInt(text, 10, 64), None where Go fails."""
    digits = text[1:] if text[:1] in (b"+", b"-") else text
    if not digits or digits.translate(None, _DIGITS):
        return None
    significant = digits.lstrip(b"0")
    if len(significant) > 19:
        return None
    value = int(significant or b"0")
    value = -value if text[:1] == b"-" else value
    return value if -_INT64 <= value < _INT64 else None


def _parse_pax(records: bytes) -> dict[bytes, bytes]:
    """archive/tar's parsePAX: `%d key=value\\n` records, each as Go checks it."""
    out: dict[bytes, bytes] = {}
    sparse_fields = 0
    pos, end = 0, len(records)
    while pos < end:
        space = records.find(b" ", pos)
        length = _go_int(records[pos:space]) if space >= 0 else None
        if length is None or length < 5 or length > end - pos:
            raise TarScanError("a malformed PAX record (its length)")
        stop = pos + length
        if stop <= space + 1 or records[stop - 1] != ord("\n"):
            raise TarScanError("a malformed PAX record (its newline)")
        key, equals, value = records[space + 1 : stop - 1].partition(b"=")
        if not equals or not key:
            raise TarScanError("a malformed PAX record (no key)")
        if key in (b"path", b"linkpath", b"uname", b"gname"):
            if b"\x00" in value:
                raise TarScanError(f"a PAX {_text(key)} with a NUL byte")
        elif b"\x00" in key:
            raise TarScanError("a PAX key with a NUL byte")
        if key in (b"GNU.sparse.offset", b"GNU.sparse.numbytes"):
            expected = b"GNU.sparse.offset" if sparse_fields % 2 == 0 else b"GNU.sparse.numbytes"
            if key != expected or b"," in value:
                raise TarScanError("malformed GNU sparse PAX records")
            sparse_fields += 1
        else:
            out[key] = value
        pos = stop
    if sparse_fields:
        out[b"GNU.sparse.map"] = b"?"
    return out


def _merge_pax(
    pax: dict[bytes, bytes], name: bytes, link: bytes, size: int, at: int
) -> tuple[bytes, bytes, int]:
    """archive/tar's mergePAX: the records that apply to the member, checked as Go does."""
    for key, value in pax.items():
        if not value:
            continue  # Go keeps the header's own value
        if key == b"path":
            name = value
        elif key == b"linkpath":
            link = value
        elif key in (b"uid", b"gid", b"size"):
            number = _go_int(value)
            if number is None:
                raise TarScanError(f"the member at byte {at} has an unreadable PAX {_text(key)}")
            if key == b"size":
                size = number
        elif key in (b"atime", b"mtime", b"ctime"):
            seconds, _, fraction = value.partition(b".")
            if _go_int(seconds) is None or fraction.translate(None, _DIGITS):
                raise TarScanError(f"the member at byte {at} has an unreadable PAX {_text(key)}")
    return name, link, size


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# --- the compression layer ----------------------------------------------------------


class _Decoder:
    def decode(self, data: bytes) -> Iterator[bytes]:
        """The decompressed bytes of `data` (and of what came before), in bounded steps."""
        raise NotImplementedError

    def check_end(self) -> None:
        """The body has ended: a TarScanError unless the compressed stream has too."""
        raise NotImplementedError


class _Plain(_Decoder):
    def decode(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data

    def check_end(self) -> None:
        return None


class _Gzip(_Decoder):
    """Go's compress/gzip Reader: members one after the other, each checked."""

    def __init__(self) -> None:
        self._phase: Literal["header", "data", "trailer"] = "header"
        self._pending = bytearray()  # an incomplete member header or trailer
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        self._crc = 0
        self._size = 0

    def decode(self, data: bytes) -> Iterator[bytes]:
        while True:
            if self._phase == "data":
                try:
                    out = self._inflate.decompress(data, _STEP)
                except zlib.error as error:
                    raise TarScanError(f"corrupt gzip data: {error}") from None
                data = self._inflate.unconsumed_tail
                if out:
                    self._crc = zlib.crc32(out, self._crc)
                    self._size = (self._size + len(out)) & 0xFFFFFFFF
                    yield out
                if self._inflate.eof:
                    data = self._inflate.unused_data
                    self._phase = "trailer"
                elif not data and len(out) < _STEP:
                    return
            elif self._phase == "trailer":
                take = 8 - len(self._pending)
                self._pending += data[:take]
                data = data[take:]
                if len(self._pending) < 8:
                    return
                crc = int.from_bytes(self._pending[:4], "little")
                size = int.from_bytes(self._pending[4:], "little")
                if crc != self._crc or size != self._size:
                    raise TarScanError("a gzip member's checksum or size does not match")
                self._pending.clear()
                self._phase = "header"
            else:
                if not data:
                    return
                self._pending += data
                length = _gzip_header_length(self._pending)
                if length is None:
                    return
                data = bytes(self._pending[length:])
                self._pending.clear()
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                self._crc = self._size = 0
                self._phase = "data"

    def check_end(self) -> None:
        # Go's Reader ends cleanly only between members (io.EOF on the next header).
        if self._phase != "header" or self._pending:
            raise TarScanError("the body ends inside its gzip stream (truncated)")


def _gzip_header_length(head: bytearray) -> int | None:
    """The length of the gzip member header `head` starts with; None: not all of it yet.
    As Go's gzip Reader checks it (names and comments: at most 511 bytes and a NUL)."""
    if len(head) < 10:
        return None
    if head[:3] != b"\x1f\x8b\x08":
        raise TarScanError("data after a gzip member that is not another gzip member")
    flags, pos = head[3], 10
    if flags & 0x04:  # FEXTRA
        if len(head) < pos + 2:
            return None
        pos += 2 + int.from_bytes(head[pos : pos + 2], "little")
        if len(head) < pos:
            return None
    for flag in (0x08, 0x10):  # FNAME, FCOMMENT
        if flags & flag:
            nul = head.find(b"\x00", pos, pos + 512)
            if nul < 0:
                if len(head) >= pos + 512:
                    raise TarScanError("a gzip header's name or comment is too long")
                return None
            pos = nul + 1
    if flags & 0x02:  # FHCRC
        if len(head) < pos + 2:
            return None
        if int.from_bytes(head[pos : pos + 2], "little") != zlib.crc32(head[:pos]) & 0xFFFF:
            raise TarScanError("a gzip header's checksum does not match")
        pos += 2
    return pos


class _Bzip2(_Decoder):
    """Go's compress/bzip2 Reader: streams one after the other."""

    def __init__(self) -> None:
        self._stream: bz2.BZ2Decompressor | None = None  # None: between streams

    def decode(self, data: bytes) -> Iterator[bytes]:
        while True:
            if self._stream is None:
                if not data:
                    return
                self._stream = bz2.BZ2Decompressor()
            try:
                out = self._stream.decompress(data, _STEP)
            except (OSError, EOFError, ValueError) as error:
                raise TarScanError(f"corrupt bzip2 data: {error}") from None
            data = b""
            if out:
                yield out
            if self._stream.eof:
                data = self._stream.unused_data
                self._stream = None
            elif self._stream.needs_input:
                return

    def check_end(self) -> None:
        if self._stream is not None:
            raise TarScanError("the body ends inside its bzip2 stream (truncated)")


class _Xz(_Decoder):
    """One xz stream; nothing may follow it before the archive's end."""

    def __init__(self) -> None:
        self._stream = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=_XZ_MEMLIMIT)

    def decode(self, data: bytes) -> Iterator[bytes]:
        while True:
            if self._stream.eof:
                if data or self._stream.unused_data:
                    raise TarScanError(
                        "data after the xz stream (concatenated xz streams are not read)"
                    )
                return
            try:
                out = self._stream.decompress(data, _STEP)
            except (lzma.LZMAError, EOFError, ValueError) as error:
                raise TarScanError(f"corrupt xz data: {error}") from None
            data = b""
            if out:
                yield out
            if not self._stream.eof and self._stream.needs_input:
                return

    def check_end(self) -> None:
        if not self._stream.eof:
            raise TarScanError("the body ends inside its xz stream (truncated)")
