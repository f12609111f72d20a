"""The compiled policy: the one object the gateway asks for a decision.

INTERFACE (owned by the policy work, used by the gateway and tenancy):

    policy = load_policy(profile, policy_file, allow_bind, env)   # raises ConfigError
    policy.body_needed(route) -> bool      # read and decode the JSON body first?
    policy.evaluate(request) -> Decision   # pure; never raises
    policy.rules                           # RuleInfo(id, resource, rationale, enabled)
    policy.derive(allow_bind=..., disable=...)  # a per-job variant (tenancy)

`evaluate` already turns any exception into a Deny (fail closed); the gateway may
wrap it again. The only I/O in evaluation is `realpath` on bind sources.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Final

from dockmoat import netinfo
from dockmoat.api.request import ApiRequest, Route
from dockmoat.errors import ConfigError
from dockmoat.policy import hostpaths
from dockmoat.policy.decision import Allow, Decision, Deny, Rewrite, WouldDeny
from dockmoat.policy.policyfile import PROFILES, PolicyFile, read_policy_file
from dockmoat.policy.rules import ALL_RULES
from dockmoat.policy.rules.base import BodyShape, Limit, Rule, Settings, Subject, deny
from dockmoat.policy.switches import Switches, from_env

# Decisions are immutable values: the plain allows are made once.
_ALLOW: Final = Allow()
_ALLOW_PERMISSIVE: Final = Allow("profile.permissive")

log = logging.getLogger(__name__)

ERROR_RULE = "policy.error"


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What `dockmoat policy show` lists for one rule."""

    id: str
    resource: str
    rationale: str
    enabled: bool
    profiles: tuple[str, ...]


@dataclass(frozen=True)
class CompiledPolicy:
    """An immutable policy, built once; evaluation reads it and nothing else."""

    profile: str
    settings: Settings
    enabled: frozenset[str]
    switches: Switches | None = None
    file: PolicyFile | None = None
    # "warn": what would be denied (403) is forwarded as WouldDeny; errors still deny.
    mode: str = "enforce"
    _catalogue: tuple[Rule, ...] = field(default=ALL_RULES, repr=False)
    # Rules per route name, filled lazily; bounded by the routing table's size.
    # init=False: `replace()` (derive) starts a fresh cache for the new rule set.
    _by_route: dict[str, tuple[Rule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @cached_property
    def rules(self) -> tuple[RuleInfo, ...]:
        return tuple(
            RuleInfo(
                rule.id,
                rule.resource,
                rule.rationale,
                rule.id in self.enabled,
                tuple(sorted(rule.profiles)),
            )
            for rule in self._catalogue
        )

    def _applies(self, route_name: str) -> tuple[Rule, ...]:
        cached = self._by_route.get(route_name)
        if cached is None:
            cached = self._by_route[route_name] = self._select(route_name)
        return cached

    def _select(self, route_name: str) -> tuple[Rule, ...]:
        resource = route_name.split(".", 1)[0]
        wildcard = f"{resource}.*"
        return tuple(
            rule
            for rule in self._catalogue
            if rule.id in self.enabled
            and (route_name in rule.routes or wildcard in rule.routes)
            and not (self.switches is not None and "endpoint" in rule.tags)
        )

    def body_needed(self, route: Route) -> bool:
        """Whether some enabled rule reads this route's JSON body."""
        return any(route.name in rule.body_routes for rule in self._applies(route.name))

    def evaluate(self, request: ApiRequest) -> Decision:
        """The decision for one request; any failure inside is a Deny."""
        try:
            decision = self._evaluate(request)
            return _warned(decision) if self.mode == "warn" else decision
        except Exception:  # fail closed: an error must never forward the request
            log.exception("policy evaluation failed for %s %s", request.method, request.path)
            return deny(
                ERROR_RULE,
                f"{request.method} {request.path}: the request could not be evaluated",
                "Nothing was forwarded; the error is in dockmoat's log",
            )

    def evaluate_build(self, request: ApiRequest) -> Decision:
        """A BuildKit call (route `buildkit.*`, body the decoded message); never raises.

        Endpoint switches decided the tunnel (`GRPC`, `SESSION`) already; the build
        rules apply to its calls whatever the switches say."""
        try:
            decision = self._evaluate(request, switches=False)
            return _warned(decision) if self.mode == "warn" else decision
        except Exception:  # fail closed
            log.exception("policy evaluation failed for the BuildKit call %s", request.path)
            return deny(
                ERROR_RULE,
                f"the BuildKit call {request.path}: it could not be evaluated",
                "Nothing was forwarded; the error is in dockmoat's log",
            )

    def _evaluate(self, request: ApiRequest, *, switches: bool = True) -> Decision:
        if switches and self.switches is not None:
            decision = self.switches.decide(request)
            if isinstance(decision, Deny):
                return decision
        body = request.body_json
        subject = Subject(request, body, self.settings)  # anew only when a rule rewrote the body
        rewrites: list[Rewrite] = []
        for rule in self._applies(request.route.name):
            try:
                decision = rule.check(subject)
            except BodyShape as shape:
                return deny(
                    rule.id,
                    f"{request.route.name}: {shape.where} must be {shape.expected}",
                    "Send the field as the Engine API documents it",
                )
            if isinstance(decision, Deny):
                return decision
            if isinstance(decision, Rewrite):
                body = decision.body_json
                subject = Subject(request, body, self.settings)
                rewrites.append(decision)
        if rewrites:
            return Rewrite(
                rule=",".join(item.rule for item in rewrites),
                notes=tuple(note for item in rewrites for note in item.notes),
                body_json=body,
            )
        return _ALLOW_PERMISSIVE if self.profile == "permissive" else _ALLOW

    def derive(
        self,
        allow_bind: Sequence[Path] | None = None,
        disable: Iterable[str] = (),
        enable: Iterable[str] = (),
        own_socket: Path | None = None,
    ) -> CompiledPolicy:
        """A variant of this policy (e.g. one job's own workspace and rules)."""
        enabled = set(self.enabled)
        for rule_id in (*disable, *enable):
            _known(rule_id, self._catalogue, "derive")
        enabled.difference_update(disable)
        enabled.update(enable)
        settings = self.settings
        if allow_bind is not None:
            settings = replace(settings, allow_bind=_folders(allow_bind))
        if own_socket is not None:
            settings = replace(settings, own_socket=str(own_socket))
        return replace(self, settings=settings, enabled=frozenset(enabled))


def _warned(decision: Decision) -> Decision:
    """Warn mode: a policy refusal becomes a WouldDeny (forwarded, audited)."""
    if isinstance(decision, Deny) and decision.status == 403 and decision.rule != ERROR_RULE:
        return WouldDeny(decision.rule, decision.message)
    return decision


def _known(rule_id: str, catalogue: tuple[Rule, ...], where: str) -> None:
    if rule_id not in {rule.id for rule in catalogue}:
        raise ConfigError(f"{where}: no rule has the id {rule_id!r} (see `dockmoat policy show`)")


def _folders(paths: Iterable[Path | str]) -> tuple[str, ...]:
    folders: list[str] = []
    for path in paths:
        text = os.fspath(path)
        if not Path(text).is_absolute():
            raise ConfigError(f"--allow-bind {text}: use an absolute path")
        if not Path(text).is_dir():
            raise ConfigError(f"--allow-bind {text}: no such folder")
        folders.append(hostpaths.resolve(text))
    return tuple(dict.fromkeys(folders))


def _upstream_socket(env: Mapping[str, str]) -> tuple[str, ...]:
    host = env.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return (host.removeprefix("unix://"),)
    return ()


def load_policy(
    profile: str = "baseline",
    policy_file: Path | None = None,
    allow_bind: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    *,
    protect: Sequence[str] = (),
    warn: bool = False,
) -> CompiledPolicy:
    """Compile the policy once at start-up; ConfigError (with lines) when it is bad.

    `env` is where endpoint switches (CONTAINERS=1, POST=0, ...) and DOCKER_HOST
    are read from; None means the process environment. `protect` adds host paths
    no bind may expose (the upstream socket given by --upstream, the tenancy
    control socket and jobs folder, ...) to the built-in daemon paths. `warn` (or
    the file's `mode: warn`): would-be denials are forwarded as WouldDeny.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    document = read_policy_file(policy_file) if policy_file is not None else None
    source = str(policy_file) if policy_file is not None else "--profile"
    if document is not None and "extends" in document.model_fields_set:
        profile = document.extends
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    enabled = {rule.id for rule in ALL_RULES if profile in rule.profiles}
    given_switches: dict[str, bool] = {}
    folders: list[Path | str] = list(allow_bind)
    settings = Settings()
    if document is not None:
        for rule_id in (*document.disable, *document.enable):
            _known(rule_id, ALL_RULES, source)
        enabled.difference_update(document.disable)
        enabled.update(document.enable)
        folders = [*document.allow_bind, *folders]
        given_switches.update(document.endpoints)
        limits = document.limits
        settings = Settings(
            runtimes=frozenset(document.runtimes) | settings.runtimes,
            registries=frozenset(registry.lower() for registry in document.registries),
            fetch_targets=tuple(document.fetch_targets),
            memory=Limit(limits.memory.default, limits.memory.max),
            nano_cpus=Limit(_nano(limits.cpus.default), _nano(limits.cpus.max)),
            pids=Limit(limits.pids.default, limits.pids.max),
        )
    given_switches.update(from_env(environ))
    settings = replace(
        settings,
        allow_bind=_folders(folders),
        protected_paths=hostpaths.protected_paths((*_upstream_socket(environ), *protect)),
        host_networks=netinfo.host_routed_networks(),
    )
    return CompiledPolicy(
        profile=profile,
        settings=settings,
        enabled=frozenset(enabled),
        switches=Switches.build(given_switches) if given_switches else None,
        file=document,
        mode="warn" if warn or (document is not None and document.mode == "warn") else "enforce",
    )


def _nano(cpus: float | None) -> int | None:
    return None if cpus is None else int(cpus * 1_000_000_000)
