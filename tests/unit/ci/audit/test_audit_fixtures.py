"""The audit on the seed's own snippets and on files written for each rule, line by line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from audit_expect import expected_from_annotations

from dockmoat.ci.audit import Severity, audit_paths, audit_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SEED = FIXTURES / "seed"
RULES = FIXTURES / "rules"

# Every YAML/Groovy snippet of seed/docker-in-docker-safely.md, saved verbatim, with
# what the audit must find: (line, rule id, severity).
SEED_EXPECTED: dict[str, set[tuple[int, str, str]]] = {
    "compose-dind.yml": {
        (4, "dind-no-healthcheck", "medium"),
        (4, "dind-no-limits", "medium"),
        (5, "unpinned-image", "medium"),
        (6, "dind-privileged", "medium"),
        (15, "unpinned-image", "medium"),
        (23, "depends-on-not-healthy", "medium"),
    },
    "compose-dind-no-tls.yml": {
        (2, "dind-no-healthcheck", "medium"),
        (2, "dind-no-limits", "medium"),
        (3, "unpinned-image", "medium"),
        (4, "dind-privileged", "medium"),
        (6, "dind-tls-disabled", "high"),
        (7, "dind-tls-disabled", "high"),
        (10, "unpinned-image", "medium"),
        (12, "docker-host-no-tls", "high"),
        (14, "depends-on-not-healthy", "medium"),
    },
    "compose-dind-rootless.yml": {
        (2, "dind-no-healthcheck", "medium"),
        (2, "dind-no-limits", "medium"),
        (3, "unpinned-image", "medium"),
        (4, "dind-privileged", "medium"),
        (12, "unpinned-image", "medium"),
        (14, "depends-on-not-healthy", "medium"),
    },
    "compose-socket.yml": {
        (3, "unpinned-image", "medium"),
        (5, "socket-mount", "high"),
    },
    "compose-socket-proxy.yml": {
        (3, "unpinned-image", "medium"),
        (4, "proxy-privileged", "high"),
        (13, "proxy-write-access", "high"),
        (19, "unpinned-image", "medium"),
        # Plain TCP to a URL-filtering proxy: what it allows is judged on the proxy.
        (21, "docker-host-no-tls", "medium"),
    },
    ".gitlab-ci.yml": {
        (2, "unpinned-image", "medium"),
        (5, "unpinned-image", "medium"),
        (5, "gitlab-dind-service", "medium"),
    },
    ".github/workflows/build.yml": {
        (10, "dind-no-healthcheck", "medium"),
        (10, "dind-no-limits", "medium"),
        (11, "unpinned-image", "medium"),
        (12, "dind-privileged", "medium"),
        (14, "dind-tls-disabled", "high"),
        (17, "unpinned-image", "medium"),
        (19, "docker-host-no-tls", "high"),
    },
    "Jenkinsfile": {
        (5, "unpinned-image", "medium"),
        (6, "socket-mount", "high"),
    },
    "compose-complete-pipeline.yml": {
        (5, "dind-no-limits", "medium"),
        (6, "unpinned-image", "medium"),
        (7, "dind-privileged", "medium"),
        (24, "unpinned-image", "medium"),
    },
}


def test_every_seed_snippet_is_a_fixture() -> None:
    seed_doc = Path("/work/shared/seed/docker-in-docker-safely.md")
    if not seed_doc.exists():
        pytest.skip("the seed document is not on this machine")
    blocks = re.findall(r"```(?:yaml|groovy)\n(.*?)```", seed_doc.read_text(), re.S)
    saved = [(SEED / name).read_text() for name in SEED_EXPECTED]
    assert sorted(blocks) == sorted(saved)


@pytest.mark.parametrize("name", sorted(SEED_EXPECTED))
def test_seed_snippet_findings(name: str) -> None:
    findings = audit_text((SEED / name).read_text(), name)
    got = {(f.line, f.rule.id, f.severity.value) for f in findings}
    assert got == SEED_EXPECTED[name]
    for finding in findings:
        assert finding.file == name
        assert finding.message
        assert finding.fix


def test_seed_lines_point_at_the_offending_text() -> None:
    lines = (SEED / "compose-socket.yml").read_text().splitlines()
    (finding,) = [
        f for f in audit_text("\n".join(lines), "compose.yml") if f.rule.id == "socket-mount"
    ]
    assert "/var/run/docker.sock" in lines[finding.line - 1]
    lines = (SEED / "Jenkinsfile").read_text().splitlines()
    (finding,) = [
        f for f in audit_text("\n".join(lines), "Jenkinsfile") if f.rule.id == "socket-mount"
    ]
    assert lines[finding.line - 1].strip().startswith("args")


RULE_FIXTURES = sorted(
    p for p in RULES.rglob("*") if p.is_file() and ("risky" in p.name or "safe" in p.name)
)


@pytest.mark.parametrize("path", RULE_FIXTURES, ids=lambda p: str(p.relative_to(RULES)))
def test_rule_fixture_findings_match_annotations(path: Path) -> None:
    result = audit_paths([str(path)])
    assert result.errors == []
    got = {(f.line, f.rule.id) for f in result.findings}
    assert got == expected_from_annotations(path)
    if "safe" in path.name:
        assert got == set()
        assert result.exit_code == 0
    else:
        assert result.exit_code == 1


def test_rule_fixtures_cover_every_rule() -> None:
    from dockmoat.ci.audit import ALL_RULES

    covered = {rule for p in RULE_FIXTURES for _, rule in expected_from_annotations(p)}
    # `unreadable` is about files that cannot be read: test_audit_readers.py has them.
    assert covered == {r.id for r in ALL_RULES} - {"unreadable"}


def test_severity_can_differ_from_the_rule_default() -> None:
    findings = audit_text((RULES / "compose-risky.yml").read_text(), "compose.yml")
    by_line = {(f.line, f.rule.id): f.severity for f in findings}
    assert by_line[(9, "docker-host-no-tls")] is Severity.HIGH  # to a DinD daemon
    assert by_line[(63, "docker-host-no-tls")] is Severity.MEDIUM  # to a socket proxy
