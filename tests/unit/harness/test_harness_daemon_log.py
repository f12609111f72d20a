"""`daemon.log_tail`: why dockerd stopped, even when its usage text follows the reason."""

from __future__ import annotations

from pathlib import Path

from harness.daemon import log_tail


def test_the_reason_before_a_long_usage_is_shown(tmp_path: Path) -> None:
    log = tmp_path / "dockerd.log"
    earlier = "Status: an earlier run's failure\n"
    usage = "".join(f"  --flag-{n}   text\n" for n in range(200))
    log.write_text(
        earlier + "Status: unknown flag: --no-such-flag\nSee 'dockerd --help'.\n" + usage
    )
    shown = log_tail(log, since=len(earlier))
    assert shown.splitlines()[0] == "Status: unknown flag: --no-such-flag"
    assert "earlier run" not in shown
    assert shown.splitlines()[-1] == "  --flag-199   text"


def test_a_short_log_is_shown_whole(tmp_path: Path) -> None:
    log = tmp_path / "dockerd.log"
    log.write_text('level=error msg="failed to start daemon"\nbye\n')
    assert log_tail(log) == 'level=error msg="failed to start daemon"\nbye'
    assert log_tail(tmp_path / "missing.log") == "(no log)"
