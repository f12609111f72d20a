"""The streamed tar reader: members and the end of the archive as Go's archive/tar finds them."""

from __future__ import annotations

import bz2
import gzip
import io
import itertools
import lzma
import posixpath
import random
import struct
import tarfile
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockmoat.api.tarscan import Member, TarScanError, TarScanner

BLOCK = 512


def want_all(name: str) -> int:
    return 1 << 30


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- building archives ----------------------------------------------------------------


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def header(
    name: bytes = b"f",
    flag: bytes = b"0",
    size: int = 0,
    *,
    link: bytes = b"",
    magic: bytes = b"ustar\x00",
    version: bytes = b"00",
    prefix: bytes = b"",
    size_field: bytes | None = None,
    fields: dict[int, bytes] | None = None,
    signed_checksum: bool = False,
    checksum: bytes | None = None,
) -> bytes:
    """A 512-byte header block written by hand (every field under the test's control)."""
    block = bytearray(BLOCK)

    def put(at: int, value: bytes) -> None:
        block[at : at + len(value)] = value

    put(0, name)
    put(100, b"0000644\x00")
    put(108, b"0001750\x00")
    put(116, b"0001750\x00")
    put(124, size_field if size_field is not None else b"%011o\x00" % size)
    put(136, b"14712345670\x00")
    put(156, flag)
    put(157, link)
    put(257, magic)
    put(263, version)
    put(265, b"user")
    put(297, b"group")
    if magic in (b"ustar\x00", b"ustar "):
        put(329, b"0000000\x00")
        put(337, b"0000000\x00")
    put(345, prefix)
    for at, value in (fields or {}).items():
        put(at, value)
    put(148, b"        ")
    total = sum(block) - (256 * sum(1 for b in block if b >= 0x80) if signed_checksum else 0)
    put(148, checksum if checksum is not None else b"%06o\x00 " % total)
    return bytes(block)


def entry(name: bytes, data: bytes = b"", flag: bytes = b"0", **kwargs: Any) -> bytes:
    return header(name, flag, len(data), **kwargs) + pad(data)


def pax(records: dict[str, str] | bytes, flag: bytes = b"x") -> bytes:
    if isinstance(records, bytes):
        body = records
    else:
        body = b"".join(record(k, v) for k, v in records.items())
    return entry(b"PaxHeaders/f", body, flag)


def record(key: str, value: str) -> bytes:
    text = f" {key}={value}\n".encode()
    length = len(text) + 1
    while len(str(length)) + len(text) != length:
        length += 1
    return str(length).encode() + text


END = bytes(2 * BLOCK)


def scan(
    body: bytes, want: Callable[[str], int] = want_all, chunk: int = 0
) -> tuple[TarScanner, list[bool]]:
    scanner = TarScanner(want)
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    results = [scanner.feed(piece) for piece in pieces]
    scanner.finish()
    return scanner, results


def summary(members: Sequence[Member]) -> list[tuple[str, str, int, str, bytes]]:
    return [(m.name, m.kind, m.size, m.link, m.data) for m in members]


# --- archives written by Python's tarfile, read back both ways ------------------------

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}
KINDS = ("file", "dir", "symlink", "hardlink", "fifo")


def build_tar(members: Sequence[tuple[str, str, bytes | str]], fmt: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=FORMATS[fmt]) as tar:
        for name, kind, content in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "file":
                assert isinstance(content, bytes)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if kind in ("symlink", "hardlink"):
                assert isinstance(content, str)
                info.linkname = content
            tar.addfile(info)
    return buffer.getvalue()


def tarfile_view(raw: bytes) -> tuple[list[tuple[str, str, int, str, bytes]], int]:
    """(members as tarfile reads them, offset of the end-of-archive marker)."""
    out: list[tuple[str, str, int, str, bytes]] = []
    end = 0
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for info in tar:
            if info.isreg():
                member = tar.extractfile(info)
                assert member is not None
                kind, data = "file", member.read()
            else:
                data = b""
                kind = (
                    "dir"
                    if info.isdir()
                    else "symlink"
                    if info.issym()
                    else "hardlink"
                    if info.islnk()
                    else "other"
                )
            link = info.linkname if kind in ("symlink", "hardlink") else ""
            name = posixpath.normpath("/" + info.name).lstrip("/")
            out.append((name, kind, len(data), link, data))
            end = info.offset_data + (len(pad(data)) if kind == "file" else 0)
    assert raw[end : end + BLOCK] == bytes(BLOCK)
    return out, end


def compress(raw: bytes, how: str, cut: int) -> bytes:
    cut = min(cut, len(raw))
    if how == "none":
        return raw
    if how == "gzip":
        return gzip.compress(raw, compresslevel=1, mtime=0)
    if how == "gzip-multi":
        return gzip.compress(raw[:cut], 1, mtime=0) + gzip.compress(raw[cut:], 1, mtime=0)
    if how == "bzip2":
        return bz2.compress(raw, 1)
    if how == "bzip2-multi":
        return bz2.compress(raw[:cut], 1) + bz2.compress(raw[cut:], 1)
    assert how == "xz"
    return lzma.compress(raw, format=lzma.FORMAT_XZ, preset=0)


def produced(body: bytes, how: str) -> int:
    """How many decompressed bytes a prefix of a body yields (a reference decoder)."""
    if how == "none":
        return len(body)
    total, rest = 0, body
    while rest:
        decoder: zlib._Decompress | bz2.BZ2Decompressor | lzma.LZMADecompressor
        if how.startswith("gzip"):
            decoder = zlib.decompressobj(31)
        elif how.startswith("bzip2"):
            decoder = bz2.BZ2Decompressor()
        else:
            decoder = lzma.LZMADecompressor(lzma.FORMAT_XZ)
        total += len(decoder.decompress(rest))
        if not decoder.eof:
            break
        rest = decoder.unused_data
    return total


names = st.lists(
    st.sampled_from([".", ".."])
    | st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), min_size=1, max_size=60),
    min_size=1,
    max_size=5,
).map("/".join)
ascii_names = st.lists(
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789._-"), min_size=1, max_size=24),
    min_size=1,
    max_size=3,
).map("/".join)


@st.composite
def archives(draw: st.DrawFn) -> tuple[str, list[tuple[str, str, bytes | str]]]:
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    name_strategy = ascii_names if fmt == "ustar" else names
    members: list[tuple[str, str, bytes | str]] = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(name_strategy)
        kind = draw(st.sampled_from(KINDS))
        content: bytes | str = b""
        if kind == "file":
            if draw(st.booleans()):
                content = draw(st.binary(max_size=1500))
            else:  # large-ish: more than one decompression step
                size = draw(st.integers(0, 200_000))
                content = random.Random(size).randbytes(size)
        elif kind in ("symlink", "hardlink"):
            content = draw(name_strategy)
        members.append((name, kind, content))
    return fmt, members


@SETTINGS
@given(
    archive=archives(),
    how=st.sampled_from(["none", "gzip", "gzip-multi", "bzip2", "bzip2-multi", "xz"]),
    cut=st.integers(0, 1 << 20),
    splits=st.lists(st.integers(0, 1 << 22), max_size=12),
)
def test_archives_read_as_tarfile_reads_them_in_any_chunking(
    archive: tuple[str, list[tuple[str, str, bytes | str]]],
    how: str,
    cut: int,
    splits: list[int],
) -> None:
    fmt, members = archive
    raw = build_tar(members, fmt)
    expected, end = tarfile_view(raw)
    body = compress(raw, how, cut)
    points = sorted({0, len(body), *(s % (len(body) + 1) for s in splits)})
    chunks = [body[a:b] for a, b in itertools.pairwise(points)]

    asked: list[str] = []

    def want(name: str) -> int:
        asked.append(name)
        return 1 << 30

    scanner = TarScanner(want)
    results = [scanner.feed(chunk) for chunk in chunks]
    scanner.finish()

    assert summary(scanner.captured) == expected
    assert asked == [m[0] for m in expected]
    assert scanner.compression == how.split("-")[0]
    assert scanner.at_end
    # True from exactly the chunk whose bytes produce the whole first zero block.
    fed = 0
    for chunk, result in zip(chunks, results, strict=True):
        fed += len(chunk)
        assert result == (produced(body[:fed], how) >= end + BLOCK)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_long_names_and_link_targets_in_every_format(fmt: str) -> None:
    long_dir = "d" * 120
    members: list[tuple[str, str, bytes | str]] = [
        (f"{long_dir}/{'f' * 90}", "file", b"prefix and name"),  # USTAR: the prefix field
        ("top", "dir", b""),
        ("ln", "symlink", "t" * 99),
        ("hl", "hardlink", "top"),
    ]
    if fmt != "ustar":
        members += [
            ("/".join(["p" * 80] * 4), "file", b"longer than 255"),
            ("sl", "symlink", "x" * 300),
            ("ünïcödé/ファイル", "file", "données".encode()),
        ]
    raw = build_tar(members, fmt)
    expected, _ = tarfile_view(raw)
    scanner, results = scan(raw)
    assert summary(scanner.captured) == expected
    assert results == [True]
    assert scanner.captured[0].name == f"{long_dir}/{'f' * 90}"


def test_only_wanted_members_are_captured() -> None:
    raw = build_tar(
        [
            ("a/Dockerfile", "file", b"FROM a"),
            ("b", "file", b"not wanted"),
            ("a", "dir", b""),
            ("./a/Dockerfile", "file", b"FROM b"),
        ],
        "pax",
    )
    wanted = {"a/Dockerfile": 100, "a": 100}
    scanner, _ = scan(raw, lambda name: wanted.get(name, 0), chunk=100)
    assert summary(scanner.captured) == [
        ("a/Dockerfile", "file", 6, "", b"FROM a"),
        ("a", "dir", 0, "", b""),
        ("a/Dockerfile", "file", 6, "", b"FROM b"),
    ]


def test_a_wanted_file_over_its_limit_is_refused_and_at_its_limit_read() -> None:
    raw = build_tar([("manifest.json", "file", b"x" * 100)], "gnu")
    scanner, _ = scan(raw, lambda name: 100)
    assert scanner.captured[0].data == b"x" * 100
    with pytest.raises(TarScanError, match="more than the 99"):
        scan(raw, lambda name: 99)
    # Not a file: captured whatever the limit, without data.
    scanner, _ = scan(build_tar([("manifest.json", "symlink", "t")], "gnu"), lambda name: 1)
    assert summary(scanner.captured) == [("manifest.json", "symlink", 0, "t", b"")]


def test_names_are_cleaned_as_moby_cleans_them() -> None:
    body = b"".join(
        entry(name, b"x", b"0") for name in (b"/abs/f", b"../up/f", b"a/./b//c", b"./", b"//x")
    )
    scanner, _ = scan(body + END)
    assert [m.name for m in scanner.captured] == ["abs/f", "up/f", "a/b/c", "", "x"]


# --- the end of the archive ------------------------------------------------------------


def test_the_end_is_the_first_zero_block_even_without_the_second() -> None:
    body = entry(b"f", b"data") + bytes(BLOCK)
    scanner = TarScanner(want_all)
    assert not scanner.feed(body[: -BLOCK + 1])
    assert scanner.feed(body[-BLOCK + 1 :])
    assert scanner.at_end
    scanner.finish()
    assert summary(scanner.captured) == [("f", "file", 4, "", b"data")]


def test_bytes_after_the_end_are_ignored() -> None:
    body = entry(b"f", b"data") + bytes(BLOCK)
    scanner = TarScanner(want_all)
    assert scanner.feed(body + b"garbage that is no header")
    assert scanner.feed(random.Random(1).randbytes(5000))
    scanner.finish()
    assert [m.name for m in scanner.captured] == ["f"]


def test_compressed_garbage_after_the_end_is_ignored() -> None:
    raw = entry(b"f", b"data") + END
    for body in (
        gzip.compress(raw) + b"not gzip at all",
        gzip.compress(raw)[:-8] + b"\x00" * 8,  # a wrong CRC, read after the end
        bz2.compress(raw) + b"junk",
        lzma.compress(raw) + b"junk",
    ):
        scanner, results = scan(body, chunk=7)
        assert results[-1]
        assert [m.name for m in scanner.captured] == ["f"]


def test_an_empty_body_is_an_empty_archive() -> None:
    scanner = TarScanner(want_all)
    assert not scanner.feed(b"")
    scanner.finish()
    assert scanner.at_end
    assert scanner.captured == []
    assert scanner.compression == "none"


def test_a_body_ending_at_a_header_boundary_without_the_marker_ends_cleanly() -> None:
    body = entry(b"a", b"x" * 512) + entry(b"b", b"")
    scanner = TarScanner(want_all)
    assert not scanner.feed(body)
    before = scanner.at_end
    scanner.finish()
    assert (before, scanner.at_end) == (False, True)
    assert [m.name for m in scanner.captured] == ["a", "b"]


def test_a_body_ending_in_padding_ends_cleanly_as_in_go() -> None:
    # archive/tar reads the padding with tryReadFull: io.EOF there is the end.
    body = entry(b"a", b"xyz")
    for cut in (BLOCK + 3, BLOCK + 4, len(body) - 1):
        scanner = TarScanner(want_all)
        scanner.feed(body[:cut])
        scanner.finish()
        assert [m.data for m in scanner.captured] == [b"xyz"]


def test_truncation_at_every_position_of_a_plain_archive() -> None:
    raw = build_tar(
        [("a", "file", b"hello"), ("d", "dir", b""), ("b", "file", b"y" * 1024)], "ustar"
    )
    _, end = tarfile_view(raw)
    # (header start, data end, next header start) of each member
    layout = [(0, 512 + 5, 1024), (1024, 1536, 1536), (1536, 2048 + 1024, 3072)]
    assert layout[-1][2] == end

    def clean(cut: int) -> bool:
        if cut >= end + BLOCK or cut in (0, end):
            return True
        return any(start == cut or data_end <= cut <= after for start, data_end, after in layout)

    for cut in range(len(raw) + 1):
        scanner = TarScanner(want_all)
        scanner.feed(raw[:cut])
        if clean(cut):
            scanner.finish()
            assert scanner.at_end
        else:
            with pytest.raises(TarScanError, match="ends inside"):
                scanner.finish()


@pytest.mark.parametrize("how", ["gzip", "bzip2", "xz"])
def test_truncated_compressed_bodies_fail_unless_the_archive_had_ended(how: str) -> None:
    raw = build_tar([("a", "file", b"hello" * 300), ("b", "file", b"")], "gnu")
    _, end = tarfile_view(raw)
    body = compress(raw, how, 0)
    for cut in range(0, len(body), 3):
        scanner = TarScanner(want_all)
        scanner.feed(body[:cut])
        if not cut or produced(body[:cut], how) >= end + BLOCK:
            scanner.finish()
        else:
            with pytest.raises(TarScanError):
                scanner.finish()


def test_marker_then_a_partial_block_ends_cleanly() -> None:
    body = entry(b"a", b"1") + bytes(BLOCK) + bytes(100)
    _, results = scan(body)
    assert results == [True]


# --- headers ---------------------------------------------------------------------------


def test_a_bad_checksum_is_refused() -> None:
    block = bytearray(entry(b"f", b"x"))
    block[10] ^= 1
    with pytest.raises(TarScanError, match="bad checksum"):
        scan(bytes(block) + END)
    with pytest.raises(TarScanError, match="checksum"):
        scan(header(checksum=b"12x4567\x00") + END)
    with pytest.raises(TarScanError, match="checksum"):
        scan(b"not a tar archive, just text" * 40)


def test_the_signed_checksum_is_accepted_as_go_accepts_it() -> None:
    name = "é-ü".encode()
    scanner, _ = scan(header(name, signed_checksum=True) + END)
    assert scanner.captured[0].name == "é-ü"


def test_numbers_in_base_256_and_octal_with_spaces() -> None:
    size_field = b"\x80" + (1000).to_bytes(11, "big")
    body = header(b"big", size_field=size_field) + pad(b"z" * 1000)
    body += header(b"spaced", size_field=b"   12 \x00\x00    ") + pad(b"q" * 10)
    scanner, _ = scan(body + END, chunk=300)
    assert [(m.name, m.size) for m in scanner.captured] == [("big", 1000), ("spaced", 10)]


def test_negative_and_unreadable_sizes_are_refused() -> None:
    negative = b"\xff" * 11 + b"\xfe"  # -2 in base-256
    with pytest.raises(TarScanError, match="negative"):
        scan(header(size_field=negative) + END)
    with pytest.raises(TarScanError, match="unreadable number"):
        scan(header(size_field=b"0000000009\x00\x00") + END)
    with pytest.raises(TarScanError, match="overflow"):
        scan(header(size_field=b"\x80\x01" + bytes(10)) + END)
    # Go parses the other numeric fields too, and refuses the header on any of them.
    with pytest.raises(TarScanError, match="unreadable number"):
        scan(header(fields={100: b"rwxr-x\x00\x00"}) + END)


def test_types_without_data_carry_none_whatever_their_size_says() -> None:
    body = header(b"d", b"5", 4096) + header(b"l", b"2", 77, link=b"t")
    body += header(b"n", b"2", size_field=b"\xff" * 12)  # negative, but not read
    body += entry(b"f", b"after")
    scanner, _ = scan(body + END)
    assert summary(scanner.captured) == [
        ("d", "dir", 0, "", b""),
        ("l", "symlink", 0, "t", b""),
        ("n", "symlink", 0, "", b""),
        ("f", "file", 5, "", b"after"),
    ]


def test_the_legacy_type_is_a_folder_when_the_name_ends_with_a_slash() -> None:
    body = header(b"dir/", b"\x00", 600) + header(b"file", b"\x00", 3) + pad(b"abc")
    body += header(b"cont", b"7", 2) + pad(b"de") + header(b"fifo", b"6", 0)
    scanner, _ = scan(body + END)
    assert summary(scanner.captured) == [
        ("dir", "dir", 0, "", b""),
        ("file", "file", 3, "", b"abc"),
        ("cont", "file", 2, "", b"de"),
        ("fifo", "other", 0, "", b""),
    ]


def test_unknown_types_carry_their_data() -> None:
    body = header(b"vol", b"V", 700) + pad(b"v" * 700) + entry(b"f", b"x")
    scanner, _ = scan(body + END)
    assert summary(scanner.captured) == [("vol", "other", 700, "", b""), ("f", "file", 1, "", b"x")]


def test_prefix_fields_of_each_layout() -> None:
    ustar = header(b"name", prefix=b"pre/fix")
    star = header(b"name", prefix=b"p" * 131, fields={476: b"00000000000\x00", 508: b"tar\x00"})
    gnu = header(b"name", magic=b"ustar ", version=b" \x00", prefix=b"00000000000\x00")
    v7 = header(b"name", magic=b"", version=b"", prefix=b"ignored")
    # The GNU layout has no prefix, unless atime/ctime do not parse (pre-Go 1.8 writers).
    legacy_gnu = header(b"name", magic=b"ustar ", version=b" \x00", prefix=b"old/go")
    scanner, _ = scan(ustar + star + gnu + v7 + legacy_gnu + END)
    assert [m.name for m in scanner.captured] == [
        "pre/fix/name",
        "p" * 131 + "/name",
        "name",
        "name",
        "old/go/name",
    ]


def test_ustar_magic_with_another_gnu_version_is_v7() -> None:
    block = header(b"name", magic=b"ustar ", version=b"00", prefix=b"not/a/prefix")
    scanner, _ = scan(block + END)
    assert scanner.captured[0].name == "name"


def test_gnu_sparse_members_are_refused() -> None:
    with pytest.raises(TarScanError, match="sparse"):
        scan(header(b"s", b"S", 0, magic=b"ustar ", version=b" \x00") + END)
    with pytest.raises(TarScanError, match="sparse"):
        scan(pax({"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}) + entry(b"f", b"1") + END)


# --- PAX and GNU long-name headers -------------------------------------------------------


def test_pax_records_apply_to_the_next_member_only() -> None:
    body = pax({"path": "from/pax", "linkpath": "target", "mtime": "1.5", "uid": "+7"})
    body += header(b"short", b"2", link=b"short")
    body += pax({"size": "5"}) + header(b"sized", b"0", 0) + pad(b"12345")
    body += pax({"path": ""}) + entry(b"kept", b"")  # an empty value keeps the header's
    body += entry(b"plain", b"p")
    scanner, _ = scan(body + END, chunk=64)
    assert summary(scanner.captured) == [
        ("from/pax", "symlink", 0, "target", b""),
        ("sized", "file", 5, "", b"12345"),
        ("kept", "file", 0, "", b""),
        ("plain", "file", 1, "", b"p"),
    ]


def test_a_second_pax_header_replaces_the_first() -> None:
    body = pax({"path": "first", "linkpath": "l1"}) + pax({"path": "second"})
    body += header(b"h", b"2", link=b"orig")
    scanner, _ = scan(body + END)
    assert summary(scanner.captured) == [("second", "symlink", 0, "orig", b"")]


def test_a_gnu_long_name_wins_over_a_pax_path() -> None:
    body = pax({"path": "pax-name"}) + entry(b"././@LongLink", b"gnu-name\x00junk", b"L")
    body += entry(b"././@LongLink", b"gnu-link\x00", b"K") + header(b"h", b"1", link=b"x")
    scanner, _ = scan(body + END)
    assert summary(scanner.captured) == [("gnu-name", "hardlink", 0, "gnu-link", b"")]


def test_a_global_pax_header_is_skipped_and_ends_what_came_before() -> None:
    body = pax({"path": "lost"}) + entry(b"././@LongLink", b"lost-too", b"L")
    body += pax({"path": "global", "comment": "x" * 600}, b"g") + entry(b"mine", b"m")
    names: list[str] = []

    def want(name: str) -> int:
        names.append(name)
        return 10

    scanner = TarScanner(want)
    assert scanner.feed(body + END)
    assert names == ["mine"]
    assert summary(scanner.captured) == [("mine", "file", 1, "", b"m")]


def test_the_shortest_pax_record_is_read() -> None:
    scanner, _ = scan(pax(b"5 a=\n") + entry(b"f") + END)  # five bytes: key "a", no value
    assert [m.name for m in scanner.captured] == ["f"]


@pytest.mark.parametrize(
    "records",
    [
        b"4 a=\n",  # length under 5
        b"30 path=x\n",  # longer than what is left
        b"10 path=x\r",  # no newline where the length says
        b"9 pathx\n\n",  # no '='
        b"7 =xy\n\n",  # an empty key
        b"x path=y\n",  # no number
        b"10path=xy\n",  # no space
        b"12 path=a\x00b\n",  # a NUL in a path
        b"11 a\x00b=val\n",  # a NUL in a key
        b"9 path=x\n" + b"garbage",
        record("GNU.sparse.numbytes", "1"),  # sparse 0.0 records out of order
    ],
)
def test_malformed_pax_records_are_refused(records: bytes) -> None:
    for flag in (b"x", b"g"):
        with pytest.raises(TarScanError, match=r"PAX|sparse"):
            scan(pax(records, flag) + entry(b"f") + END)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("size", "12a"),
        ("size", "99999999999999999999"),
        ("uid", "-"),
        ("gid", "1.0"),
        ("mtime", "x.5"),
        ("atime", "1.5e3"),
        ("ctime", ".5"),
    ],
)
def test_pax_values_go_refuses_are_refused(key: str, value: str) -> None:
    with pytest.raises(TarScanError, match=f"PAX {key}"):
        scan(pax({key: value}) + entry(b"f") + END)
    # In a global header Go does not apply them, so does not check them.
    scan(pax({key: value}, b"g") + entry(b"f") + END)


def test_a_negative_pax_size_is_refused() -> None:
    with pytest.raises(TarScanError, match="negative"):
        scan(pax({"size": "-1"}) + entry(b"f") + END)


def test_special_headers_are_bounded_to_one_mebibyte() -> None:
    long_name = b"n" * (1 << 20)
    scanner, _ = scan(entry(b"././@LongLink", long_name, b"L") + entry(b"x") + END, chunk=65536)
    assert scanner.captured[0].name == "n" * (1 << 20)
    for flag in (b"L", b"K", b"x", b"g"):
        with pytest.raises(TarScanError, match="1 MiB"):
            scan(header(b"big", flag, (1 << 20) + 1) + END)


def test_truncated_special_headers() -> None:
    body = pax({"path": "p"})
    data_end = BLOCK + len(record("path", "p"))
    with pytest.raises(TarScanError, match="ends inside"):
        scan(body[: data_end - 1])
    # In its padding, Go ends cleanly (and the record applies to nothing).
    scanner, _ = scan(body[: data_end + 1])
    assert scanner.at_end
    assert scanner.captured == []


# --- compression -------------------------------------------------------------------------

RAW = entry(b"Dockerfile", b"FROM scratch\n") + entry(b"big", bytes(300_000)) + END


@pytest.mark.parametrize(
    "prefix",
    [
        b"\x28\xb5\x2f\xfd" + bytes(20),
        struct.pack("<I", 0x184D2A50) + bytes(20),
        struct.pack("<I", 0x184D2A5F) + bytes(20),
    ],
)
def test_zstd_is_refused(prefix: bytes) -> None:
    scanner = TarScanner(want_all)
    with pytest.raises(TarScanError, match="zstd"):
        scanner.feed(prefix)
    with pytest.raises(TarScanError, match="zstd"):  # sticky
        scanner.feed(b"")
    with pytest.raises(TarScanError, match="zstd"):
        scanner.finish()


def test_a_short_skippable_zstd_magic_is_read_as_moby_reads_it() -> None:
    # moby needs 8 bytes to call it a skippable frame: a shorter body is a (truncated) tar.
    scanner = TarScanner(want_all)
    scanner.feed(struct.pack("<I", 0x184D2A50))
    with pytest.raises(TarScanError, match="ends inside the header"):
        scanner.finish()


def test_sniffing_waits_for_enough_bytes() -> None:
    body = gzip.compress(RAW)
    scanner = TarScanner(want_all)
    for byte in body[:20]:
        assert not scanner.feed(bytes([byte]))
    assert scanner.compression == "gzip"
    assert scanner.feed(body[20:])
    scanner.finish()
    assert [m.name for m in scanner.captured] == ["Dockerfile", "big"]


def gzip_member(
    data: bytes, flags: int = 0, extra: bytes = b"", *, bad_hcrc: bool = False
) -> bytes:
    head = b"\x1f\x8b\x08" + bytes([flags]) + bytes(6)
    if flags & 0x04:
        head += struct.pack("<H", len(extra)) + extra
    if flags & 0x08:
        head += b"name.tar\x00"
    if flags & 0x10:
        head += b"a comment\x00"
    if flags & 0x02:
        head += struct.pack("<H", (zlib.crc32(head) & 0xFFFF) ^ bad_hcrc)
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    return head + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def test_gzip_headers_with_every_optional_field() -> None:
    # FTEXT, FHCRC, FEXTRA, FNAME, FCOMMENT; then the reserved flags, which Go ignores.
    first = gzip_member(RAW[:700], 0x1F, b"extra!")
    body = first + gzip_member(RAW[700:], 0xE0)
    for chunk in (1, 13, 4096, 0):
        scanner = TarScanner(want_all)
        if chunk == 1:  # byte by byte through both headers
            for at in range(len(first) + 40):
                scanner.feed(body[at : at + 1])
            scanner.feed(body[len(first) + 40 :])
        else:
            for at in range(0, len(body), chunk or len(body)):
                scanner.feed(body[at : at + (chunk or len(body))])
        scanner.finish()
        assert [m.name for m in scanner.captured] == ["Dockerfile", "big"]
        assert scanner.captured[0].data == b"FROM scratch\n"


def test_gzip_header_errors() -> None:
    with pytest.raises(TarScanError, match="header's checksum"):
        scan(gzip_member(RAW, 0x02, bad_hcrc=True))
    long_name = b"\x1f\x8b\x08\x08" + bytes(6) + b"n" * 600 + b"\x00"
    with pytest.raises(TarScanError, match="too long"):
        scan(long_name + gzip_member(RAW)[10:])
    # 511 bytes and its NUL is as long as Go's reader takes.
    ok = b"\x1f\x8b\x08\x08" + bytes(6) + b"n" * 511 + b"\x00"
    scan(ok + gzip_member(RAW)[10:])


def test_gzip_members_must_follow_each_other_until_the_end() -> None:
    no_marker = entry(b"f", b"x")
    with pytest.raises(TarScanError, match="not another gzip member"):
        scan(gzip.compress(no_marker) + b"garbage!!!!")
    with pytest.raises(TarScanError, match="truncated"):
        scan(gzip.compress(no_marker) + b"\x1f\x8b")
    member = gzip.compress(no_marker)
    with pytest.raises(TarScanError, match="checksum or size"):
        scan(member[:-8] + struct.pack("<II", 1, len(no_marker)))
    with pytest.raises(TarScanError, match="checksum or size"):
        scan(member[:-4] + struct.pack("<I", 1))
    with pytest.raises(TarScanError, match="corrupt gzip"):
        scan(b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 100)
    # A member boundary at a header boundary, without the marker: a clean end.
    scanner, _ = scan(gzip.compress(no_marker) + gzip.compress(entry(b"g", b"y")))
    assert [m.name for m in scanner.captured] == ["f", "g"]


def test_bzip2_streams_follow_each_other() -> None:
    no_marker = entry(b"f", b"x")
    scanner, _ = scan(bz2.compress(no_marker) + bz2.compress(entry(b"g", b"y")), chunk=10)
    assert [m.name for m in scanner.captured] == ["f", "g"]
    with pytest.raises(TarScanError, match="corrupt bzip2"):
        scan(bz2.compress(no_marker) + b"garbage that is not bzip2")
    with pytest.raises(TarScanError, match="truncated"):
        scan(bz2.compress(no_marker) + b"BZ")
    with pytest.raises(TarScanError, match="truncated"):
        scan(bz2.compress(no_marker)[:-1])


def test_xz_is_one_stream() -> None:
    no_marker = entry(b"f", b"x")
    with pytest.raises(TarScanError, match="after the xz stream"):
        scan(lzma.compress(no_marker) + lzma.compress(entry(b"g", b"y")))
    with pytest.raises(TarScanError, match="truncated"):
        scan(lzma.compress(no_marker)[:-1])
    with pytest.raises(TarScanError, match="corrupt xz"):
        scan(b"\xfd7zXZ\x00" + b"\x00" * 100)
    scanner, _ = scan(lzma.compress(no_marker))
    assert [m.name for m in scanner.captured] == ["f"]


def test_a_large_member_decompresses_in_steps() -> None:
    raw = entry(b"zeros", bytes(8 << 20)) + entry(b"Dockerfile", b"FROM x") + END
    for how in ("gzip", "bzip2", "xz"):
        scanner, results = scan(compress(raw, how, 0), lambda n: 100 if n == "Dockerfile" else 0)
        assert results == [True]
        assert summary(scanner.captured) == [("Dockerfile", "file", 6, "", b"FROM x")]


def test_errors_are_sticky() -> None:
    scanner = TarScanner(want_all)
    with pytest.raises(TarScanError, match="checksum") as first:
        scanner.feed(b"x" * 600)
    with pytest.raises(TarScanError) as again:
        scanner.feed(END)
    assert again.value is first.value
    with pytest.raises(TarScanError):
        scanner.finish()


# --- anything else: a TarScanError, never another exception ------------------------------

magic_prefixes = st.sampled_from(
    [b"", b"\x1f\x8b\x08", b"\x1f\x8b\x08\x1f", b"BZh9", b"BZh", b"\xfd7zXZ\x00", b"ustar"]
)


@SETTINGS
@given(
    prefix=magic_prefixes,
    data=st.binary(max_size=3000),
    splits=st.lists(st.integers(0, 3000), max_size=8),
)
def test_arbitrary_bytes_raise_only_tar_scan_errors(
    prefix: bytes, data: bytes, splits: list[int]
) -> None:
    body = prefix + data
    points = sorted({0, len(body), *(s % (len(body) + 1) for s in splits)})
    scanner = TarScanner(want_all)
    try:
        for a, b in itertools.pairwise(points):
            scanner.feed(body[a:b])
        scanner.finish()
    except TarScanError:
        pass


@SETTINGS
@given(
    archive=archives(),
    how=st.sampled_from(["none", "gzip", "bzip2", "xz"]),
    flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 1 << 20),
)
def test_corrupted_archives_raise_only_tar_scan_errors(
    archive: tuple[str, list[tuple[str, str, bytes | str]]],
    how: str,
    flips: list[tuple[int, int]],
    cut: int,
) -> None:
    fmt, members = archive
    body = bytearray(compress(build_tar(members, fmt), how, 0))
    for at, mask in flips:
        body[at % len(body)] ^= mask
    body = body[: len(body) - cut % (len(body) + 1) // 4]
    scanner = TarScanner(lambda name: 1 << 16)
    try:
        for at in range(0, len(body), 777):
            scanner.feed(bytes(body[at : at + 777]))
        scanner.finish()
    except TarScanError:
        pass
