"""What a policy file loosens relative to the profile it extends, said out loud.

`policy validate`, `serve` (at start and on SIGHUP) and `job open --policy` print
each line of `weakenings()`; `check_extends()` refuses a file whose `extends`
contradicts an explicit `--profile` unless the operator says the file may win.
"""

from __future__ import annotations

from pathlib import Path

from dockmoat.errors import ConfigError
from dockmoat.policy.engine import CompiledPolicy
from dockmoat.policy.policyfile import PolicyFile
from dockmoat.policy.rules import ALL_RULES

# Endpoint switches that open what the profiles' endpoint rules keep closed.
_OPENING_SWITCHES = {
    "PLUGINS": "plugins (system.plugins: they run as root on the host)",
    "SWARM": "swarm (system.swarm)",
    "NODES": "swarm nodes (system.swarm)",
    "SERVICES": "swarm services (system.swarm: they bypass container rules)",
    "TASKS": "swarm tasks (system.swarm)",
    "SECRETS": "swarm secrets (system.swarm)",
    "CONFIGS": "swarm configs (system.swarm)",
}
_STRICTNESS = {"permissive": 0, "baseline": 1, "restricted": 2}
OVERRIDE_FLAG = "--policy-overrides-profile"


def weakenings(policy: CompiledPolicy) -> list[str]:
    """One line per rule or setting the policy's file disables or loosens relative
    to the profile it extends (empty without a file, or when it only tightens)."""
    document = policy.file
    if document is None:
        return []
    lines: list[str] = []
    if policy.profile == "permissive":
        lines.append("extends permissive: no rule is enforced, requests are only audited")
    base = {rule.id for rule in ALL_RULES if policy.profile in rule.profiles}
    for rule in ALL_RULES:
        if rule.id in base and rule.id not in policy.enabled:
            lines.append(f"disables {rule.id}: {rule.rationale}")
    for folder in document.allow_bind:
        if Path(folder) == Path("/"):
            lines.append("allow_bind: / lets containers bind every file of the host")
        else:
            lines.append(f"allow_bind: containers may bind {folder} and what is under it")
    for runtime in document.runtimes:
        if runtime != "runc":
            lines.append(f"runtimes: allows the OCI runtime {runtime}")
    for registry in document.registries:
        lines.append(f"registries: allows {registry} even at a private or loopback address")
    for target in document.fetch_targets:
        lines.append(f"fetch_targets: lets the daemon fetch from {target}")
    for name, opened in document.endpoints.items():
        if opened and name in _OPENING_SWITCHES:
            lines.append(f"endpoints: {name}=1 opens {_OPENING_SWITCHES[name]}")
    if document.mode == "warn":
        lines.append("mode: warn forwards requests the policy would deny (audited as would_deny)")
    return lines


def check_extends(
    document: PolicyFile | None, source: str, profile: str | None, *, override: bool
) -> None:
    """ConfigError when the file's `extends` names another profile than an explicit
    `--profile` (None: not given) and `override` (the flag) is not set."""
    if document is None or profile is None or override:
        return
    if "extends" not in document.model_fields_set or document.extends == profile:
        return
    looser = _STRICTNESS[document.extends] < _STRICTNESS.get(profile, 1)
    raise ConfigError(
        f"{source}: extends: {document.extends} contradicts --profile {profile}"
        f"{' (it is looser)' if looser else ''}; drop one of them, or give {OVERRIDE_FLAG} "
        "to let the file's profile win"
    )
