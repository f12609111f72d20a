"""`dockmoat dind pool` refuses bad sizes and cache keys with exit 2 and one line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dockmoat.cli import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--size", "0"), "at least one --cache KEY"),
        (("--size", "65"), "between 0 and 64"),
        (("--cache", "bad key"), "invalid cache key"),
        (("--cache", "-x"), "invalid cache key"),
    ],
)
def test_bad_pool_settings_are_2_without_a_traceback(args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(
        main, ["dind", "pool", *args, "--socket", "/nonexistent/p.sock"], env={}
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.stderr
