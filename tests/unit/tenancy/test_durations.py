import pytest

from dockmoat.errors import ConfigError
from dockmoat.tenancy.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1d", 86400), ("45", 45)],
)
def test_parse(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "0", "2x", "h", "1h 2m", "-5m", "31d"])
def test_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(bad)


def test_format() -> None:
    assert format_duration(5025) == "1h23m"
    assert format_duration(59) == "59s"
    assert format_duration(90000) == "1d1h"
