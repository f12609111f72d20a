"""Quoting for the formats the generator writes (values are validated, quoting is still exact)."""

from __future__ import annotations

import json


def yaml_str(value: str) -> str:
    """A YAML double-quoted scalar; a JSON string is one (characters beyond the BMP stay
    literal: JSON would write them as surrogate pairs, which YAML does not join)."""
    return json.dumps(value, ensure_ascii=False)


_PLAIN_UNSAFE_START = tuple("-?:,[]{}#&*!|>'\"%@`")


def yaml_item(value: str) -> str:
    """A plain scalar when YAML reads it back unchanged, else a double-quoted one."""
    plain_ok = (
        value
        and value == value.strip()
        and not value.startswith(_PLAIN_UNSAFE_START)
        and ": " not in value
        and " #" not in value
        and not value.endswith(":")
    )
    return value if plain_ok else yaml_str(value)


def compose_str(value: str) -> str:
    """Compose interpolates `$`; `$$` is a literal dollar for the container's shell."""
    return yaml_str(value.replace("$", "$$"))


def groovy_single(value: str) -> str:
    """A Groovy single-quoted string: no interpolation, only `\\` and `'` to escape."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def groovy_triple(value: str) -> str:
    """A Groovy ''' string for multi-line shell scripts (no Groovy interpolation)."""
    return "'''" + value.replace("\\", "\\\\").replace("'''", "\\'\\'\\'") + "'''"
