"""Go's case folding, tested against the Go program at hand: the live dockerd.

Every non-ASCII character whose case mappings touch an ASCII letter (long s,
Kelvin sign, dotless/dotted i, sharp s, ligatures, ...) is put into a struct
field name in place of that letter. dockerd applies the field exactly when Go's
folding matches the name; `gojson.fold` must predict that, character by character.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rawdocker import call, socket_of

from dockmoat.api import gojson

# field name -> (JSON value, did dockerd apply it?)
FIELDS: dict[str, tuple[Any, Callable[[dict[str, Any]], bool]]] = {
    "Labels": ({"dmtest": "fold"}, lambda i: (i["Config"]["Labels"] or {}).get("dmtest") == "fold"),
    "WorkingDir": ("/wd", lambda i: i["Config"]["WorkingDir"] == "/wd"),
    "Hostname": ("hfold", lambda i: i["Config"]["Hostname"] == "hfold"),
    "Entrypoint": (["/bin/true"], lambda i: i["Config"]["Entrypoint"] == ["/bin/true"]),
    "OomScoreAdj": (7, lambda i: i["HostConfig"]["OomScoreAdj"] == 7),
    "ReadonlyRootfs": (True, lambda i: i["HostConfig"]["ReadonlyRootfs"] is True),
}


def candidates() -> list[tuple[str, str, str]]:
    """(character, letter it may stand for, field) for every such character."""
    out = []
    for point in range(0x80, 0x20000):
        if 0xD800 <= point <= 0xDFFF:
            continue
        char = chr(point)
        letters = {
            x.lower()
            for mapped in (char.lower(), char.upper(), char.casefold(), char.title())
            for x in mapped
            if x in string.ascii_letters
        }
        for letter in sorted(letters):
            field = next((f for f in FIELDS if letter in f.lower()), None)
            if field is not None:
                out.append((char, letter, field))
    return out


CASES = candidates()


@pytest.fixture
def create(
    docker_host: str, busybox_image: str
) -> Iterator[Callable[[bytes], dict[str, Any] | None]]:
    sock = socket_of(docker_host)
    made: list[str] = []

    def run(raw: bytes) -> dict[str, Any] | None:
        status, answer = call(sock, "POST", "/v1.41/containers/create", raw)
        if status != 201:
            return None
        made.append(answer["Id"])
        return call(sock, "GET", f"/v1.41/containers/{answer['Id']}/json")[1]

    yield run
    for ident in made:
        call(sock, "DELETE", f"/v1.41/containers/{ident}?force=1")


def test_the_candidate_set_covers_the_known_folds() -> None:
    chars = {char for char, _, _ in CASES}
    assert {"\u017f", "\u212a", "\u0131", "\u0130", "\u00df", "\u1e9e"} <= chars


@pytest.mark.parametrize(
    ("char", "letter", "field"), CASES, ids=[f"U+{ord(c):04X}-{x}" for c, x, _ in CASES]
)
def test_fold_predicts_what_dockerd_matches(
    create: Callable[[bytes], dict[str, Any] | None],
    busybox_image: str,
    char: str,
    letter: str,
    field: str,
) -> None:
    index = field.lower().index(letter)
    key = field[:index] + char + field[index + 1 :]
    value, applied = FIELDS[field]
    raw = json.dumps({"Image": busybox_image, key: value}, ensure_ascii=False).encode()
    info = create(raw)
    assert info is not None
    daemon_matched = applied(info)
    assert (gojson.fold(key) == gojson.fold(field)) == daemon_matched, (key, daemon_matched)
    assert (gojson.field_key(gojson.loads(raw), field) == key) == daemon_matched
