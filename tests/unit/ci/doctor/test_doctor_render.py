import io

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from dockmoat.ci.doctor.checks_dind import LOG_PATTERNS, scan_logs
from dockmoat.ci.doctor.model import fail, ok, warn
from dockmoat.ci.doctor.render import print_text


def test_text_report_lists_status_check_detail_and_fix() -> None:
    buffer = io.StringIO()
    findings = [
        ok("daemon.reachable", "answers"),
        warn("tls.expiry", "cert.pem expires in 3 days", "renew [it]"),
        fail("socket.permissions", "no access", "`sudo usermod -aG docker alice`"),
    ]
    print_text(findings, Console(file=buffer, width=200, color_system=None))
    lines = buffer.getvalue().splitlines()
    assert lines[0].split() == ["ok", "daemon.reachable", "answers"]
    assert lines[1].startswith("warn  tls.expiry")
    # Square brackets are text, not rich markup.
    assert lines[2].strip() == "fix: renew [it]"
    assert lines[3].startswith("fail  socket.permissions")
    assert lines[4].strip() == "fix: `sudo usermod -aG docker alice`"
    assert lines[5] == "1 ok, 1 warn, 1 fail"


@given(st.lists(st.text(max_size=80), max_size=20))
def test_log_scan_reports_each_kind_at_most_once_in_pattern_order(lines: list[str]) -> None:
    found = scan_logs("\n".join(lines))
    labels = [pattern.label for pattern, _ in found]
    order = [p.label for p in LOG_PATTERNS]
    assert labels == sorted(set(labels), key=order.index)
    for pattern, line in found:
        assert pattern.regex.search(line)
