import pytest

from dockmoat.errors import ProtocolError
from dockmoat.tenancy.protocol import (
    CloseRequest,
    LsRequest,
    OpenRequest,
    encode,
    parse_answer,
    parse_request,
)


def test_requests_round_trip() -> None:
    line = encode({"op": "open", "job": "j", "ttl": 60, "quotas": {"volumes": 1}})
    request = parse_request(line)
    assert isinstance(request, OpenRequest)
    assert request.ttl == 60 and request.quotas.volumes == 1
    assert isinstance(parse_request(b'{"op":"close","job":"j"}\n'), CloseRequest)
    assert isinstance(parse_request(b'{"op":"ls"}'), LsRequest)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"{",
        b'{"op":"rm"}',
        b'{"op":"close"}',
        b'{"op":"ls","x":1}',
        b'{"op":"open","job":"j","ttl":0}',
    ],
)
def test_bad_requests_are_refused(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_request(bad)


def test_answers() -> None:
    assert parse_answer(b'{"ok": true, "jobs": []}')["jobs"] == []
    with pytest.raises(ProtocolError):
        parse_answer(b"[]")
