"""`dockmoat audit` as users run it: output formats, exit codes, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dockmoat.ci.audit import ALL_RULES
from dockmoat.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SOCKET = str(FIXTURES / "seed" / "compose-socket.yml")  # one high finding
COMPLETE = str(FIXTURES / "seed" / "compose-complete-pipeline.yml")  # medium only
SAFE = str(FIXTURES / "rules" / "compose-safe.yml")  # nothing
REPO = Path(__file__).resolve().parents[4]


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["audit", *args])


def test_exit_codes() -> None:
    assert run(SAFE).exit_code == 0
    assert run(COMPLETE).exit_code == 0  # medium findings do not fail
    assert run(SOCKET).exit_code == 1
    assert run(SAFE, SOCKET, COMPLETE).exit_code == 1


def test_text_is_grouped_by_file_and_plain_when_not_a_terminal() -> None:
    result = run(SOCKET, COMPLETE, SAFE)
    lines = result.output.splitlines()
    assert "\x1b[" not in result.output
    assert lines[0] == SOCKET
    assert lines[1].startswith(f"  {SOCKET}:3: medium unpinned-image: ")
    assert lines[3].startswith(f"  {SOCKET}:5: high socket-mount: ")
    assert lines[4].strip().startswith("fix: ")
    assert COMPLETE in lines
    assert SAFE not in lines  # no findings, no header
    assert lines[-1] == "6 finding(s) (1 high, 5 medium, 0 low) in 3 file(s)"


def test_json_shape() -> None:
    result = run("--format", "json", SOCKET)
    data = json.loads(result.stdout)
    assert result.exit_code == 1
    assert data == [
        {
            "rule": "unpinned-image",
            "severity": "medium",
            "file": SOCKET,
            "line": 3,
            "message": data[0]["message"],
            "fix": data[0]["fix"],
        },
        {
            "rule": "socket-mount",
            "severity": "high",
            "file": SOCKET,
            "line": 5,
            "message": data[1]["message"],
            "fix": data[1]["fix"],
        },
    ]
    assert all(isinstance(d["message"], str) and d["message"] for d in data)
    assert "guarded socket" in data[1]["fix"]


def test_json_of_a_clean_file_is_an_empty_list() -> None:
    result = run("--format", "json", SAFE)
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])


_LEVELS = {"none", "note", "warning", "error"}


def _require(obj: dict[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in obj]
    assert not missing, f"missing {missing} in {sorted(obj)}"


# Objects of the 2.1.0 schema are `additionalProperties: false`; these are the names
# the schema allows, for the objects dockmoat writes (the subset that could plausibly
# be misspelt).
_ALLOWED = {
    "log": {"$schema", "version", "runs", "inlineExternalProperties", "properties"},
    "result": {
        "ruleId", "ruleIndex", "rule", "kind", "level", "message", "analysisTarget",
        "locations", "guid", "correlationGuid", "occurrenceCount", "partialFingerprints",
        "fingerprints", "relatedLocations", "suppressions", "rank", "fixes", "properties",
    },
    "rule": {
        "id", "deprecatedIds", "guid", "name", "shortDescription", "fullDescription",
        "messageStrings", "defaultConfiguration", "helpUri", "help", "relationships",
        "properties",
    },
    "driver": {
        "guid", "name", "organization", "product", "shortDescription", "fullDescription",
        "fullName", "version", "semanticVersion", "informationUri", "downloadUri",
        "notifications", "rules", "taxa", "language", "properties",
    },
    "physicalLocation": {"address", "artifactLocation", "region", "contextRegion", "properties"},
    "region": {
        "startLine", "startColumn", "endLine", "endColumn", "snippet", "message", "properties",
    },
}  # fmt: skip


def _only(obj: dict[str, Any], kind: str) -> None:
    extra = set(obj) - _ALLOWED[kind]
    assert not extra, f"{kind} has properties the schema forbids: {extra}"


def check_sarif_210(log: dict[str, Any]) -> None:
    """The required properties and enums of the SARIF 2.1.0 schema that we emit."""
    _require(log, "version", "runs")
    _only(log, "log")
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    assert isinstance(log["runs"], list)
    for run_ in log["runs"]:
        _require(run_, "tool")
        driver = run_["tool"]["driver"]
        _require(driver, "name")
        _only(driver, "driver")
        rule_ids = []
        for rule in driver["rules"]:
            _require(rule, "id", "shortDescription", "help", "defaultConfiguration")
            _only(rule, "rule")
            _require(rule["shortDescription"], "text")
            _require(rule["help"], "text")
            assert rule["defaultConfiguration"]["level"] in _LEVELS
            rule_ids.append(rule["id"])
        assert len(rule_ids) == len(set(rule_ids))
        for result in run_["results"]:
            _require(result, "message", "ruleId", "level", "locations")
            _only(result, "result")
            _require(result["message"], "text")
            assert result["level"] in _LEVELS
            assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
            for location in result["locations"]:
                physical = location["physicalLocation"]
                _require(physical, "artifactLocation", "region")
                _only(physical, "physicalLocation")
                _only(physical["region"], "region")
                _require(physical["artifactLocation"], "uri")
                assert isinstance(physical["region"]["startLine"], int)
                assert physical["region"]["startLine"] >= 1
        for invocation in run_.get("invocations", []):
            _require(invocation, "executionSuccessful")


def test_sarif() -> None:
    result = run("--format", "sarif", SOCKET, COMPLETE)
    log = json.loads(result.stdout)
    check_sarif_210(log)
    run_ = log["runs"][0]
    assert {r["id"] for r in run_["tool"]["driver"]["rules"]} == {r.id for r in ALL_RULES}
    high = [r for r in run_["results"] if r["ruleId"] == "socket-mount"]
    assert len(high) == 1 and high[0]["level"] == "error"
    location = high[0]["locations"][0]["physicalLocation"]
    assert location["region"]["startLine"] == 5
    assert location["artifactLocation"]["uri"] == Path(SOCKET).as_uri()
    assert {r["level"] for r in run_["results"]} == {"error", "warning"}
    assert run_["invocations"][0]["executionSuccessful"] is True
    # Merges with other tools' SARIF: own category, help per rule, line-free fingerprints.
    assert run_["automationDetails"]["id"] == "dockmoat-audit/"
    for rule in run_["tool"]["driver"]["rules"]:
        assert rule["helpUri"].endswith(f"docs/audit.md#{rule['id']}")
    again = json.loads(run("--format", "sarif", SOCKET, COMPLETE).stdout)["runs"][0]
    prints = [r["partialFingerprints"]["dockmoat/v1"] for r in run_["results"]]
    assert prints == [r["partialFingerprints"]["dockmoat/v1"] for r in again["results"]]
    assert len(set(prints)) == len(prints)


def test_sarif_relative_uri_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my dir").mkdir()
    (tmp_path / "my dir" / "docker-compose.yml").write_text(
        "services:\n  a:\n    image: x:1\n    privileged: true\n"
    )
    result = run("--format", "sarif", "my dir/docker-compose.yml", "missing.yml")
    log = json.loads(result.stdout)
    check_sarif_210(log)
    finding, unreadable = log["runs"][0]["results"]
    assert unreadable["ruleId"] == "unreadable"
    assert unreadable["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "missing.yml"
    )
    assert finding["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == (
        "my%20dir/docker-compose.yml"
    )
    invocation = log["runs"][0]["invocations"][0]
    assert invocation["executionSuccessful"] is False
    assert "missing.yml" in invocation["toolExecutionNotifications"][0]["message"]["text"]


def test_bad_files_get_one_line_each_and_do_not_stop_the_others(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "docker-compose.yml"
    bad_yaml.write_text("services: [unclosed\n")
    unknown = tmp_path / "notes.yml"
    unknown.write_text("title: hello\n")
    binary = tmp_path / "compose.yml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    missing = tmp_path / "nope.yml"
    not_a_dir = binary / "docker-compose.yml"  # unreadable even for root
    runner = CliRunner()
    args = ["audit", str(bad_yaml), str(unknown), str(binary), str(missing), str(tmp_path)]
    args += [str(not_a_dir), COMPLETE]
    result = runner.invoke(main, args)
    errors = result.stderr.splitlines()
    assert errors == [
        f"dockmoat audit: {bad_yaml}: not valid YAML at line 2: "
        + errors[0].split(": ", 3)[-1].split(": ", 1)[-1],
        f"dockmoat audit: {unknown}: unknown format: not a compose file, .gitlab-ci.yml, "
        "GitHub workflow, Jenkinsfile, runner config or Kubernetes manifest "
        "(use --type to say which)",
        f"dockmoat audit: {binary}: not UTF-8 text (byte 0)",
        f"dockmoat audit: {missing}: no such file",
        f"dockmoat audit: {tmp_path}: is a directory",
        f"dockmoat audit: {not_a_dir}: cannot read: Not a directory",
    ]
    # The good file was still audited; each bad one is a high `unreadable` finding.
    assert f"{COMPLETE}:7: medium dind-privileged" in result.stdout
    assert f"{missing}:1: high unreadable: not audited: no such file" in result.stdout
    assert f"{bad_yaml}:2: high unreadable" in result.stdout
    assert result.exit_code == 1
    # --lenient: the same files, reported low, and the medium-only run passes.
    lenient = runner.invoke(main, [*args[:1], "--lenient", *args[1:]])
    assert f"{missing}:1: low unreadable" in lenient.stdout
    assert lenient.exit_code == 0
    assert runner.invoke(main, ["audit", "--lenient", str(missing), SOCKET]).exit_code == 1


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "docker-compose.yml"
    path.write_text("services: {}\n")
    path.chmod(0)
    result = run(str(path))
    assert result.stderr.strip() == f"dockmoat audit: {path}: permission denied"
    assert result.exit_code == 1


def test_type_option_overrides_detection(tmp_path: Path) -> None:
    path = tmp_path / "stack.txt"
    path.write_text("services:\n  a:\n    privileged: true\n")
    assert run(str(path)).exit_code == 1  # unknown format: not audited
    result = run("--type", "compose", "--format", "json", str(path))
    assert [(d["rule"], d["line"]) for d in json.loads(result.stdout)] == [("privileged", 3)]


def test_usage_errors() -> None:
    assert run().exit_code == 2
    assert run("--format", "xml", SAFE).exit_code == 2


def test_real_command_in_a_subprocess() -> None:
    exe = Path(sys.executable).parent / "dockmoat"
    assert exe.exists(), exe
    proc = subprocess.run(
        [str(exe), "audit", "--format", "json", SOCKET, str(REPO / "no-such-file.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    rules = [d["rule"] for d in json.loads(proc.stdout)]
    assert rules == ["unpinned-image", "socket-mount", "unreadable"]
    assert proc.stderr.strip().endswith("no-such-file.yml: no such file")


def test_summary_counts_files_not_audited(tmp_path: Path) -> None:
    result = run(SOCKET, str(tmp_path / "missing.yml"))
    assert result.stdout.splitlines()[-1] == (
        "3 finding(s) (2 high, 1 medium, 0 low) in 1 file(s); 1 file(s) could not be audited"
    )


def test_colours_on_a_terminal() -> None:
    import io

    from rich.console import Console

    from dockmoat.ci.audit import audit_paths
    from dockmoat.ci.audit.report import render_text

    result = audit_paths([SOCKET])
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="standard", width=200)
    render_text(result.findings, result.files, result.errors, console)
    out = buffer.getvalue()
    assert "\x1b[1;31mhigh" in out  # high in bold red
    assert "\x1b[33mmedium" in out  # medium in yellow
