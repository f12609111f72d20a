"""errors.http_status and answer_message: the one mapping of our errors to answers."""

from __future__ import annotations

import pytest

from dockmoat.errors import (
    BodyTooLarge,
    ConfigError,
    DockmoatError,
    NotFoundError,
    ProtocolError,
    StateError,
    UpstreamError,
    answer_message,
    config_errors,
    http_status,
)


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (ProtocolError("a header twice"), 400, "dockmoat: bad request: a header twice"),
        (NotFoundError("No such image: x"), 404, "dockmoat: No such image: x"),
        (BodyTooLarge("body over 1 MiB"), 413, "dockmoat: body over 1 MiB"),
        (UpstreamError("upstream failed: reset"), 502, "dockmoat: upstream failed: reset"),
        (StateError("disk full"), 503, "dockmoat: disk full"),
        (ConfigError("bad flag"), 500, "dockmoat: bad flag"),
        (DockmoatError("unexpected"), 500, "dockmoat: unexpected"),
    ],
)
def test_each_error_has_one_status_and_one_message(
    error: DockmoatError, status: int, message: str
) -> None:
    assert http_status(error) == status
    assert answer_message(error) == message


def test_config_errors_maps_a_value_error_with_its_prefix() -> None:
    with pytest.raises(ConfigError) as caught, config_errors("img: "):
        raise ValueError("bad entrypoint")
    assert str(caught.value) == "img: bad entrypoint"
    assert caught.value.__suppress_context__ and caught.value.__cause__ is None


def test_config_errors_lets_other_errors_through() -> None:
    with pytest.raises(KeyError), config_errors():
        raise KeyError("x")
    with pytest.raises(StateError), config_errors():
        raise StateError("disk full")
