"""The policy file: YAML, validated once at start-up with line-numbered errors.

extends: baseline            # baseline | restricted | permissive
disable: [containers.links]  # rule ids switched off
enable: [containers.no-binds]  # rule ids switched on (e.g. restricted ones)
allow_bind: [/srv/ci/workspaces]
runtimes: [runsc]            # allowed besides the daemon's default
registries: [registry.internal:5000]   # allowed even at private addresses
fetch_targets: [https://git.internal/]  # remote contexts / URL imports allowed
limits:
  memory: {default: 2g, max: 8g}
  cpus: {default: 2, max: 4}
  pids: {default: 4096, max: 32768}
endpoints: {CONTAINERS: 1, POST: 1}   # Tecnativa-style switches
quotas: {}                   # reserved for per-job tenancy
mode: enforce                # or warn: would-be denials are forwarded, audited as would_deny
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from dockmoat.errors import ConfigError
from dockmoat.policy.rules import ALL_RULES
from dockmoat.policy.switches import VARIABLES, parse_flag

PROFILES = ("baseline", "restricted", "permissive")
Profile = Literal["baseline", "restricted", "permissive"]

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_bytes(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a size such as 512m or 2g")
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size such as 512m or 2g")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def show_bytes(size: int) -> str:
    """A size as people write it (2g, 512m, 1536k), exact."""
    for unit in ("t", "g", "m", "k"):
        if size >= _UNITS[unit] and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size} bytes"


def _consistent(
    default: float | None, maximum: float | None, shown: tuple[str, str], implicit: bool
) -> None:
    if default is not None and maximum is not None and default > maximum:
        what = f"the default {shown[0]}{' (implicit)' if implicit else ''}"
        raise ValueError(f"{what} is above the max {shown[1]}; a default must be at most the max")


class MemoryLimit(_Strict):
    default: int | None = None
    max: int | None = None

    @field_validator("default", "max", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int | None:
        return None if value is None else parse_bytes(value)

    @model_validator(mode="after")
    def _default_within_max(self) -> MemoryLimit:
        if self.default is not None and self.max is not None:
            shown = (show_bytes(self.default), show_bytes(self.max))
            _consistent(self.default, self.max, shown, implicit=False)
        return self


class CpuLimit(_Strict):
    default: float | None = Field(default=None, gt=0)
    max: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _default_within_max(self) -> CpuLimit:
        _consistent(self.default, self.max, (f"{self.default}", f"{self.max}"), implicit=False)
        return self


class PidsLimit(_Strict):
    default: int = Field(default=4096, gt=0)
    max: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _default_within_max(self) -> PidsLimit:
        implicit = "default" not in self.model_fields_set
        _consistent(self.default, self.max, (f"{self.default}", f"{self.max}"), implicit)
        return self


class Limits(_Strict):
    memory: MemoryLimit = MemoryLimit()
    cpus: CpuLimit = CpuLimit()
    pids: PidsLimit = PidsLimit()


class PolicyFile(_Strict):
    extends: Profile = "baseline"
    disable: list[str] = []
    enable: list[str] = []
    allow_bind: list[str] = []
    runtimes: list[str] = []
    registries: list[str] = []
    fetch_targets: list[str] = []
    limits: Limits = Limits()
    endpoints: dict[str, bool] = {}
    quotas: dict[str, Any] = {}
    # warn: requests the policy would deny are forwarded and audited as would_deny.
    mode: Literal["enforce", "warn"] = "enforce"

    @field_validator("endpoints", mode="before")
    @classmethod
    def _switches(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, bool] = {}
        for name, raw in value.items():
            if name not in VARIABLES:
                raise ValueError(f"unknown endpoint switch {name!r}; known: {', '.join(VARIABLES)}")
            try:
                out[name] = parse_flag(name, raw)
            except ConfigError as error:
                raise ValueError(str(error)) from None
        return out

    @field_validator("disable", "enable")
    @classmethod
    def _rule_ids(cls, value: list[str]) -> list[str]:
        known = {rule.id for rule in ALL_RULES}
        for rule_id in value:
            if rule_id not in known:
                raise ValueError(f"no rule has the id {rule_id!r} (see `dockmoat policy show`)")
        return value

    @field_validator("allow_bind")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for folder in value:
            if not folder.startswith("/"):
                raise ValueError(f"{folder!r} is not an absolute path")
        return value


def _line_of(document: Any, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of a validation error's location in the YAML document."""
    node = document
    line: int | None = None
    for part in loc:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(part, int) and isinstance(node, list):
                if lc is not None:
                    line = lc.item(part)[0] + 1
                node = node[part]
            elif isinstance(node, dict) and part in node:
                if lc is not None:
                    line = lc.key(part)[0] + 1
                node = node[part]
            else:
                break
        except (KeyError, IndexError, TypeError):
            break
    return line


def parse_policy_text(text: str, source: str) -> PolicyFile:
    """Validate a policy document; ConfigError lists every problem with its line."""
    try:
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: not valid YAML: {error.problem}") from None
    except YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{source}:1: a policy file is a mapping (extends:, disable:, ...)")
    try:
        return PolicyFile.model_validate(_plain(document))
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            loc = tuple(problem["loc"])
            line = _line_of(document, loc)
            where = f"{source}:{line}" if line is not None else source
            field = ".".join(str(part) for part in loc) or "(top)"
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {field}: {message}")
        if len(lines) == 1:  # one problem, one line
            raise ConfigError(f"invalid policy file {lines[0]}") from None
        raise ConfigError("invalid policy file\n" + "\n".join(lines)) from None


def _plain(node: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists, for pydantic."""
    if isinstance(node, dict):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    return node


def read_policy_file(path: Path) -> PolicyFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read policy file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"policy file {path} is not UTF-8") from None
    return parse_policy_text(text, str(path))
