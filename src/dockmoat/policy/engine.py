"""The compiled policy: the one object the gateway asks for a decision.

INTERFACE (owned by the policy work, used by the gateway):

    policy = load_policy(PolicySettings(...))      # at start-up; raises ConfigError
    policy.body_needed(route) -> bool              # read and decode the JSON body first?
    policy.evaluate(request) -> Decision           # pure; never raises for bad input

The gateway wraps `evaluate` so that any exception becomes a Deny (fail closed).
"""

from __future__ import annotations
