"""Streamed request bodies that carry references, read as they pass (sans-IO).

Two bodies name objects inside content the guard otherwise streams unread:

- a classic `docker build`'s context: its Dockerfile's `FROM` and `COPY --from`
  images, which the builder resolves in the local image store (another job's
  image, by tag or id) or pulls (from any registry, the host's loopback included),
  and the URLs its `ADD` makes the daemon download;
- a `docker load` tarball: the tags it sets (`manifest.json`'s `RepoTags`, an OCI
  `index.json`'s image names, a legacy tarball's `repositories`).

Both are tar archives (possibly compressed), which dockerd unpacks completely
before it acts, and its untar stops at the end-of-archive marker. So a reader
here is fed the body chunk by chunk; `feed` says when the end of the archive has
passed through it, and from there the gateway holds the rest of the body back
until the reader's findings are decided (dockmoat.gateway.pipeline.decide_body).
A refused body never reaches its end at the daemon: the connection is cut and
the daemon drops what it unpacked. What cannot be read as dockerd reads it is
`BodyUnreadable`, which the caller refuses (fail closed).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dockmoat.api.dockerfile import (
    DockerfileError,
    ImageSource,
    check_frontend_args,
    fetched_urls,
    image_sources,
)
from dockmoat.api.tarscan import Member, TarScanError, TarScanner

DEFAULT_DOCKERFILE: Final = "Dockerfile"
#: The most of a Dockerfile read (the builder has no limit; real ones are a few KiB).
MAX_DOCKERFILE: Final = 1 << 20
#: The most of each image tarball index file read (manifest.json, index.json, repositories).
MAX_INDEX: Final = 4 << 20
_INDEX_FILES: Final = frozenset({"manifest.json", "index.json", "repositories"})


#: The rule of a body (or a session's Dockerfile) refused because it cannot be read as
#: dockerd will read it.
UNREADABLE_RULE: Final = "api.unreadable-body"


class BodyUnreadable(ValueError):
    """A streamed body the guard cannot read as dockerd will (the request is refused)."""


def clean(path: str) -> str:
    """A path inside an archive as moby's untar resolves it under its root."""
    return posixpath.normpath("/" + path).lstrip("/")


def plain_path(path: str) -> bool:
    """A relative path already in its cleanest form (no `.`, `..`, `//`, leading `/`):
    the name a file has in a listing or an archive, read one way only."""
    return path not in ("", ".") and clean(path) == path


def _ancestors(path: str) -> set[str]:
    parts = path.split("/")
    return {"/".join(parts[:i]) for i in range(1, len(parts))}


@dataclass(frozen=True, slots=True)
class BuildSources:
    """The images a classic build resolves or pulls (empty: no Dockerfile found, which
    the builder refuses by itself)."""

    dockerfile: str
    sources: tuple[ImageSource, ...]
    urls: tuple[ImageSource, ...] = ()  # what ADD makes the daemon download


@dataclass(frozen=True, slots=True)
class ArchiveTags:
    """The tags a `docker load` tarball sets: (tag, image id where the tarball says it)."""

    tags: tuple[tuple[str, str | None], ...]  # manifest.json's (or a legacy tarball's)
    legacy: bool  # a `repositories` file and no `manifest.json`: dockerd reports no tags
    # An OCI index.json's image names, with the manifest digest (the image id on the
    # containerd image store).
    index_names: tuple[tuple[str, str | None], ...] = ()


class _ArchiveReader:
    def __init__(self, want: Mapping[str, int]) -> None:
        self._want = want
        self._scanner = TarScanner(lambda name: want.get(name, 0))

    def feed(self, data: bytes) -> bool:
        """Read the next bytes; True once the end of the archive lies in or before them."""
        try:
            return self._scanner.feed(data)
        except TarScanError as error:
            raise BodyUnreadable(str(error)) from None

    def _members(self) -> list[Member]:
        try:
            self._scanner.finish()
        except TarScanError as error:
            raise BodyUnreadable(str(error)) from None
        return self._scanner.captured


class BuildContextReader(_ArchiveReader):
    """A classic build's context: finds the Dockerfile the builder will read."""

    def __init__(self, dockerfile: str | None, build_args: Mapping[str, str | None]) -> None:
        self._name = clean(dockerfile or DEFAULT_DOCKERFILE)
        self._build_args = build_args
        # The builder falls back to `dockerfile` when the default name is missing.
        self._fallback = (
            "dockerfile" if (dockerfile or DEFAULT_DOCKERFILE) == "Dockerfile" else None
        )
        want: dict[str, int] = {}
        for name in (self._name, self._fallback):
            if name is None:
                continue
            want[name] = MAX_DOCKERFILE
            for ancestor in _ancestors(name):
                want.setdefault(ancestor, MAX_DOCKERFILE)
        super().__init__(want)

    def finish(self) -> BuildSources:
        members = self._members()
        for member in members:
            if member.kind not in ("dir", "file"):
                # A link on the Dockerfile's path: which file the builder opens depends on
                # the whole tree; not modelled.
                raise BodyUnreadable(
                    f"the build context's {member.name!r} is a {member.kind}, on the path of "
                    "the Dockerfile: dockmoat reads a Dockerfile that is a plain file "
                    "reached through plain folders"
                )
        name = self._name
        files = [m for m in members if m.name == name and m.kind == "file"]
        if not files and not any(m.name == name for m in members) and self._fallback:
            name = self._fallback
            files = [m for m in members if m.name == name and m.kind == "file"]
        if any(m.name == name and m.kind == "dir" for m in members):
            return BuildSources(name, ())  # the builder refuses a folder by itself
        sources: list[ImageSource] = []
        urls: list[ImageSource] = []
        for member in files:  # every copy of it (the last one wins when unpacked)
            text = member.data.decode("utf-8", "surrogateescape")
            try:
                sources.extend(image_sources(text, self._build_args))
                urls.extend(fetched_urls(text))
            except DockerfileError as error:
                raise BodyUnreadable(f"the Dockerfile {name!r}: {error}") from None
        return BuildSources(name, tuple(sources), tuple(urls))


def session_build(dockerfile: str | None, args: Mapping[str, str | None]) -> str:
    """A `/build?version=2` build whose Dockerfile comes through its BuildKit session:
    the Dockerfile's name (as the session's file listing shows it), or BodyUnreadable
    for a build that can be refused before it starts."""
    name = dockerfile or DEFAULT_DOCKERFILE
    if not plain_path(name):
        raise BodyUnreadable(
            f"the Dockerfile name {name[:80]!r} is not a plain relative path; name the file "
            "as it is in its folder"
        )
    try:
        check_frontend_args(args)
    except DockerfileError as error:
        raise BodyUnreadable(f"{error}; build with buildx (docker buildx build)") from None
    return name


def session_dockerfile(name: str, text: bytes, args: Mapping[str, str | None]) -> BuildSources:
    """What a `/build?version=2` build's Dockerfile names, read as dockerd's built-in
    BuildKit frontend reads it (custom frontends and what is not modelled refused)."""
    decoded = text.decode("utf-8", "surrogateescape")
    try:
        return BuildSources(
            name,
            tuple(image_sources(decoded, args, buildkit=True)),
            tuple(fetched_urls(decoded, buildkit=True)),
        )
    except DockerfileError as error:
        raise BodyUnreadable(
            f"the Dockerfile {name!r}: {error}; build with buildx (docker buildx build), "
            "whose builds are read call by call"
        ) from None


class ImageArchiveReader(_ArchiveReader):
    """A `docker load` tarball: the tags it sets."""

    def __init__(self) -> None:
        super().__init__(dict.fromkeys(_INDEX_FILES, MAX_INDEX))

    def finish(self) -> ArchiveTags:
        found: dict[str, list[tuple[str, str | None]]] = {name: [] for name in _INDEX_FILES}
        members = self._members()
        for member in members:
            if member.kind != "file":
                raise BodyUnreadable(f"the image tarball's {member.name} is a {member.kind}")
            document = _json(member)
            if member.name == "manifest.json":
                found[member.name].extend(_manifest_tags(document))
            elif member.name == "index.json":
                found[member.name].extend(_index_tags(document))
            else:
                found[member.name].extend(_repositories_tags(document))
        seen = {member.name for member in members}
        # dockerd reads manifest.json where there is one (`repositories` is the legacy
        # format's); the index's names are the caller's to weigh against it.
        tags = list(found["manifest.json"])
        legacy = "repositories" in seen and "manifest.json" not in seen
        if legacy:
            tags.extend(found["repositories"])
        return ArchiveTags(tuple(tags), legacy, tuple(found["index.json"]))


def _json(member: Member) -> Any:
    try:
        return json.loads(member.data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BodyUnreadable(f"the image tarball's {member.name} is not JSON") from None


def _manifest_tags(document: Any) -> list[tuple[str, str | None]]:
    if not isinstance(document, list):
        raise BodyUnreadable("the image tarball's manifest.json is not a list")
    out: list[tuple[str, str | None]] = []
    for entry in document:
        if not isinstance(entry, dict):
            raise BodyUnreadable("the image tarball's manifest.json holds a non-object")
        config = entry.get("Config")
        image_id = _config_id(config) if isinstance(config, str) else None
        for tag in entry.get("RepoTags") or []:
            if not isinstance(tag, str):
                raise BodyUnreadable("the image tarball's manifest.json has a non-string tag")
            out.append((tag, image_id))
    return out


def _config_id(config: str) -> str | None:
    """The image id a manifest.json `Config` path names ("<hex>.json" or "blobs/sha256/<hex>")."""
    base = posixpath.basename(config)
    digest = base.removesuffix(".json")
    if len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
        return f"sha256:{digest}"
    return None


def _index_tags(document: Any) -> list[tuple[str, str | None]]:
    if not isinstance(document, dict):
        raise BodyUnreadable("the image tarball's index.json is not an object")
    out: list[tuple[str, str | None]] = []
    for manifest in document.get("manifests") or []:
        annotations = manifest.get("annotations") if isinstance(manifest, dict) else None
        if not isinstance(annotations, dict):
            continue
        digest = manifest.get("digest")
        for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
            value = annotations.get(key)
            # A bare ref.name ("latest") names no repository and sets no tag.
            if isinstance(value, str) and ("/" in value or ":" in value):
                # The manifest's digest: the image's id on the containerd image store.
                out.append((value, digest if isinstance(digest, str) else None))
    return out


def _repositories_tags(document: Any) -> list[tuple[str, str | None]]:
    if not isinstance(document, dict):
        raise BodyUnreadable("the image tarball's repositories is not an object")
    out: list[tuple[str, str | None]] = []
    for repo, tags in document.items():
        if not isinstance(tags, dict):
            raise BodyUnreadable("the image tarball's repositories is not repo -> tag -> id")
        out.extend((f"{repo}:{tag}", None) for tag in tags)
    return out


def build_args(raw: str | None) -> dict[str, str | None]:
    """`/build?buildargs=` (a JSON object of strings or nulls)."""
    if raw is None or not raw.strip() or raw.strip() == "null":
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise BodyUnreadable("buildargs is not JSON") from None
    if not isinstance(value, dict) or not all(
        isinstance(v, str) or v is None for v in value.values()
    ):
        raise BodyUnreadable("buildargs must map names to strings or null")
    return value
