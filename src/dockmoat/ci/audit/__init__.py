"""`dockmoat audit`: static analysis of CI files for the ways they hand out Docker.

Entry points:
- `audit_text(text, name, kind=None) -> list[Finding]`: pure; raises ConfigError on
  input that cannot be audited (not YAML, unknown format).
- `audit_paths(paths, kind=None, lenient=False) -> AuditResult`: reads files, never
  stops at a bad one; a file that cannot be audited is an `unreadable` finding (high,
  low with `lenient`) as well as an entry of `errors`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from dockmoat.ci.audit import (
    compose,
    github,
    gitlab,
    gitlab_runner,
    jenkins,
    kubernetes,
    rules,
    yamlsrc,
)
from dockmoat.ci.audit.detect import (
    Kind,
    kind_from_name,
    kind_from_yaml,
    looks_like_jenkins,
    looks_like_runner_config,
)
from dockmoat.ci.audit.findings import FileError, Finding, Hit, Rule, Severity
from dockmoat.ci.audit.rules import ALL_RULES
from dockmoat.ci.audit.runnerctx import AuditContext
from dockmoat.errors import ConfigError

__all__ = [
    "ALL_RULES",
    "AuditResult",
    "FileError",
    "Finding",
    "Kind",
    "Rule",
    "Severity",
    "audit_paths",
    "audit_source",
    "audit_text",
]

# Larger CI files do not exist; reading one is a mistake (a binary, a log).
MAX_FILE_BYTES = 4 * 1024 * 1024


def audit_text(
    text: str, name: str, kind: Kind | None = None, context: AuditContext | None = None
) -> list[Finding]:
    """Findings for one file's content; `name` is how findings refer to the file.

    `context`: what the runner configs of the same run grant (see `audit_paths`).
    """
    detected = _detect(text, name, kind)
    if detected is Kind.JENKINS:
        hits: Iterable[Hit] = jenkins.analyse(text)
    elif detected is Kind.GITLAB_RUNNER:
        hits = list(gitlab_runner.analyse(text))
    else:
        hits = _yaml_hits(yamlsrc.load_all(text), detected, context)
    return _finish(hits, name)


def _detect(text: str, name: str, kind: Kind | None) -> Kind | None:
    detected = kind or kind_from_name(name)
    if detected is None and looks_like_jenkins(text):
        detected = Kind.JENKINS
    if detected is None and looks_like_runner_config(text):
        detected = Kind.GITLAB_RUNNER
    if detected is None and name.lower().endswith(".toml"):
        raise ConfigError(
            "unknown format: a TOML file without [[runners]] is not a GitLab Runner "
            "config.toml (use --type to say which)"
        )
    return detected


def _yaml_hits(docs: list[object], kind: Kind | None, context: AuditContext | None) -> list[Hit]:
    hits: list[Hit] = []
    detected = kind
    for doc in docs or [None]:
        detected = kind or kind_from_yaml(doc)
        if detected is None:
            continue
        if yamlsrc.mapping(doc) is None:
            raise ConfigError(f"not a {detected.value} file: the top level is not a mapping")
        if detected is Kind.GITLAB:
            hits.extend(gitlab.analyse(doc, context))
        elif detected is Kind.KUBERNETES:
            hits.extend(kubernetes.analyse(doc))
        elif detected is Kind.GITHUB:
            hits.extend(github.analyse(doc, context))
        elif detected is Kind.COMPOSE:
            hits.extend(compose.analyse(doc))
        else:
            raise ConfigError(f"a {detected.value} file is not YAML")
    if detected is None:
        raise ConfigError(
            "unknown format: not a compose file, .gitlab-ci.yml, GitHub workflow, "
            "Jenkinsfile, runner config or Kubernetes manifest (use --type to say which)"
        )
    return hits


def _finish(hits: Iterable[Hit], name: str) -> list[Finding]:
    """Sorted by line, one finding per rule and line (a line says a thing once)."""
    seen: set[tuple[str, int]] = set()
    out: list[Finding] = []
    for hit in hits:
        key = (hit.rule.id, hit.line)
        if key in seen:
            continue
        seen.add(key)
        out.append(hit.in_file(name))
    out.sort(key=lambda f: (f.line, -f.severity.rank, f.rule.id))
    return out


@dataclass
class AuditResult:
    findings: list[Finding] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 on any high finding (an unreadable file is one, unless lenient); else 0."""
        return 1 if any(f.severity is Severity.HIGH for f in self.findings) else 0


def audit_paths(
    paths: Iterable[str], kind: Kind | None = None, *, lenient: bool = False
) -> AuditResult:
    """Audit every file; runner configs among them are the context the CI files run in."""
    result = AuditResult()
    texts: list[tuple[str, str | FileError]] = []
    for name in paths:
        result.files.append(name)
        try:
            texts.append((name, _read(name)))
        except ConfigError as error:
            texts.append((name, FileError(name, str(error))))
    context = AuditContext()
    for name, text in texts:
        # A broken one is reported as unreadable when the file itself is audited.
        if isinstance(text, str):
            _learn_context(context, text, name, kind)
    for name, text in texts:
        if isinstance(text, FileError):
            _not_audited(result, text, lenient)
            continue
        findings, failure = audit_source(text, name, kind, lenient=lenient, context=context)
        result.findings.extend(findings)
        if failure is not None:
            result.errors.append(failure)
    return result


def _learn_context(context: AuditContext, text: str, name: str, kind: Kind | None) -> None:
    """What a runner config given in this run grants the CI files beside it.

    Never fails: a file it cannot learn from is reported when it is audited itself.
    """
    with contextlib.suppress(Exception):
        _learn(context, text, name, kind)


def _learn(context: AuditContext, text: str, name: str, kind: Kind | None) -> None:
    detected = _detect(text, name, kind)
    if detected is Kind.GITLAB_RUNNER:
        context.gitlab_runners.extend(gitlab_runner.grants(text, name))
    elif detected in (None, Kind.KUBERNETES) and "runnerScaleSetName" in text:
        for doc in yamlsrc.load_all(text):
            scale_set = kubernetes.scale_set(doc, name)
            if scale_set is not None:
                context.arc_scale_sets.append(scale_set)


def audit_source(
    text: str,
    name: str,
    kind: Kind | None = None,
    *,
    lenient: bool = False,
    context: AuditContext | None = None,
) -> tuple[list[Finding], FileError | None]:
    """Like `audit_text`, but never raises: input it cannot audit is an `unreadable` finding."""
    try:
        findings = audit_text(text, name, kind, context)
        if lenient:  # an embedded part that could not be read (a Jenkins pod's YAML)
            findings = [
                replace(f, severity=Severity.LOW) if f.rule is rules.UNREADABLE else f
                for f in findings
            ]
        return findings, None
    except ConfigError as error:
        reason = str(error)
    except RecursionError:
        reason = "nested too deeply to audit"
    except Exception as error:  # noqa: BLE001
        # Fail closed: a bug on one odd file must neither pass it as clean nor
        # stop the audit of the others; it counts as a file not audited.
        reason = f"internal error while auditing ({type(error).__name__}: {error})"
    failure = FileError(name, reason)
    return [_unreadable(failure, lenient)], failure


_AT_LINE = re.compile(r"\bline (\d+)")


def _not_audited(result: AuditResult, error: FileError, lenient: bool) -> None:
    result.errors.append(error)
    result.findings.append(_unreadable(error, lenient))


def _unreadable(error: FileError, lenient: bool) -> Finding:
    match = _AT_LINE.search(error.reason)
    return Hit(
        rules.UNREADABLE,
        int(match.group(1)) if match else 1,
        f"not audited: {error.reason}",
        severity=Severity.LOW if lenient else None,
    ).in_file(error.file)


def _read(name: str) -> str:
    path = Path(name)
    try:
        if path.is_dir():
            raise ConfigError("is a directory")
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as error:
        raise ConfigError("no such file") from error
    except PermissionError as error:
        raise ConfigError("permission denied") from error
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror or error}") from error
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; not a CI file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"not UTF-8 text (byte {error.start})") from error
