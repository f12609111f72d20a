"""Durations as users write them (`90s`, `30m`, `2h`, `1h30m`, `1d`): pure parsing."""

from __future__ import annotations

import re

from dockmoat.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+)([smhd])")
MAX_SECONDS = 30 * 86400  # a CI job that outlives a month is a leak, not a job


def parse_duration(text: str) -> int:
    """Seconds in `text`; raises ConfigError for anything else, zero, or more than 30 days."""
    spec = text.strip().lower()
    if spec.isdigit():
        seconds = int(spec)
    else:
        pos = 0
        seconds = 0
        for match in _PART.finditer(spec):
            if match.start() != pos:
                break
            seconds += int(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(spec) or not spec:
            raise ConfigError(f"invalid duration {text!r}: use e.g. 90s, 30m, 2h, 1h30m, 1d")
    if seconds <= 0 or seconds > MAX_SECONDS:
        raise ConfigError(f"duration {text!r} must be between 1s and 30d")
    return seconds


def format_duration(seconds: float) -> str:
    """`5025` -> `1h23m`; coarse, for tables."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
