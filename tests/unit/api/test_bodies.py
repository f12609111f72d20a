"""Streamed bodies that name objects, read as they pass (api/bodies.py)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dockmoat.api.bodies import (
    ArchiveTags,
    BodyUnreadable,
    BuildContextReader,
    BuildSources,
    ImageArchiveReader,
    build_args,
)

ID = "ab" * 32


def archive(files: dict[str, bytes], links: dict[str, str] | None = None, mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def read_build(
    body: bytes,
    dockerfile: str | None = None,
    args: dict[str, str | None] | None = None,
    step: int = 777,
) -> BuildSources:
    reader = BuildContextReader(dockerfile, args or {})
    for start in range(0, len(body), step):
        reader.feed(body[start : start + step])
    return reader.finish()


def read_load(body: bytes) -> ArchiveTags:
    reader = ImageArchiveReader()
    reader.feed(body)
    return reader.finish()


def test_the_dockerfile_the_builder_opens_is_read() -> None:
    body = archive({"src/a.py": b"x" * 5000, "Dockerfile": b"ARG B=alpine\nFROM $B AS x\nFROM x\n"})
    found = read_build(body, args={"B": "evil:1"})
    assert found.dockerfile == "Dockerfile"
    assert [(s.ref, s.where) for s in found.sources] == [("evil:1", "FROM on line 2")]


def test_a_named_dockerfile_and_the_lower_case_fallback() -> None:
    body = archive({"./ci/Build.df": b"FROM a\n", "dockerfile": b"FROM b\n"})
    assert [s.ref for s in read_build(body, "ci/Build.df").sources] == ["a"]
    assert [s.ref for s in read_build(body).sources] == ["b"]  # no Dockerfile: dockerfile
    assert read_build(archive({"x": b""}), "Missing").sources == ()  # dockerd says so itself


def test_every_copy_of_the_dockerfile_is_read() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for text in (b"FROM first\n", b"FROM second\n"):
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    assert [s.ref for s in read_build(buffer.getvalue()).sources] == ["first", "second"]


@pytest.mark.parametrize(
    ("files", "links", "dockerfile"),
    [
        ({"real": b"FROM a\n"}, {"Dockerfile": "real"}, None),
        ({"d/Dockerfile": b"FROM a\n"}, {"sub": "d"}, "sub/Dockerfile"),
    ],
)
def test_a_link_on_the_dockerfiles_path_is_unreadable(
    files: dict[str, bytes], links: dict[str, str], dockerfile: str | None
) -> None:
    with pytest.raises(BodyUnreadable, match="symlink"):
        read_build(archive(files, links), dockerfile)


def test_a_dockerfile_not_read_confidently_is_unreadable() -> None:
    with pytest.raises(BodyUnreadable, match="heredoc"):
        read_build(archive({"Dockerfile": b"FROM a\nRUN <<EOF\nFROM b\nEOF\n"}))
    with pytest.raises(BodyUnreadable):
        read_build(b"not a tar archive at all" * 40)


def test_compressed_contexts_are_read() -> None:
    body = archive({"Dockerfile": b"FROM a\nADD https://h/x /x\n"}, mode="w:gz")
    found = read_build(body, step=50)
    assert [s.ref for s in found.sources] == ["a"]
    assert [u.ref for u in found.urls] == ["https://h/x"]


def test_a_load_tarballs_tags() -> None:
    manifest = [{"Config": f"blobs/sha256/{ID}", "RepoTags": ["app:1", "app:2"], "Layers": []}]
    index = {"manifests": [{"digest": "sha256:" + "cd" * 32, "annotations": {
        "io.containerd.image.name": "docker.io/library/app:1",
        "org.opencontainers.image.ref.name": "1"}}]}  # fmt: skip
    body = archive({"manifest.json": json.dumps(manifest).encode(),
                    "index.json": json.dumps(index).encode(),
                    "repositories": b'{"app": {"1": "x"}}'})  # fmt: skip
    found = read_load(body)
    assert found.tags == (("app:1", f"sha256:{ID}"), ("app:2", f"sha256:{ID}"))
    assert found.index_names == (("docker.io/library/app:1", "sha256:" + "cd" * 32),)
    assert not found.legacy


def test_a_legacy_tarball_is_told_apart() -> None:
    found = read_load(archive({"repositories": b'{"app": {"1": "x", "2": "y"}}'}))
    assert found.legacy and found.tags == (("app:1", None), ("app:2", None))


@pytest.mark.parametrize("document", [b"{", b"[1]", b'{"a": 1}'])
def test_index_files_that_are_not_what_dockerd_reads_are_unreadable(document: bytes) -> None:
    with pytest.raises(BodyUnreadable):
        read_load(archive({"manifest.json": document, "repositories": document}))


def test_build_args() -> None:
    assert build_args(None) == {} and build_args("null") == {}
    assert build_args('{"A": "1", "B": null}') == {"A": "1", "B": None}
    for raw in ("[1]", '{"A": 1}', "{"):
        with pytest.raises(BodyUnreadable):
            build_args(raw)


@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=600))
def test_readers_raise_only_body_unreadable(body: bytes, step: int) -> None:
    for reader in (BuildContextReader(None, {}), ImageArchiveReader()):
        try:
            for start in range(0, len(body), step):
                reader.feed(body[start : start + step])
            reader.finish()
        except BodyUnreadable:
            pass
