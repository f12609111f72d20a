"""GitLab `!reference [job, key, ...]` tags, replaced by what they point at.

GitLab resolves them before it runs anything (up to 10 levels deep); unresolvable
ones stay as they are (a list of names), which the audit reads as nothing.
"""

from __future__ import annotations

from typing import Any

from dockmoat.ci.audit import yamlsrc as y

_MAX_DEPTH = 10


def resolve_references(root: Any) -> None:
    """Replace every `!reference` in `root` (a GitLab document) in place."""
    _walk(root, root, 0)


def _is_reference(node: Any) -> bool:
    tag = getattr(node, "tag", None)
    return y.sequence(node) is not None and getattr(tag, "value", None) == "!reference"


def _target(root: Any, path: Any, depth: int) -> Any:
    node = root
    for part in path:
        as_map = y.mapping(node)
        if as_map is None or not isinstance(part, str) or part not in as_map:
            return None
        node = as_map[part]
    if _is_reference(node) and depth < _MAX_DEPTH:
        return _target(root, node, depth + 1)
    return node


def _walk(root: Any, node: Any, depth: int) -> None:
    if depth > _MAX_DEPTH * 10:
        return
    as_map = y.mapping(node)
    if as_map is not None:
        for key in list(as_map):
            _resolve(root, as_map, key, as_map[key], depth)
        return
    as_seq = y.sequence(node)
    if as_seq is not None:
        for i, value in enumerate(list(as_seq)):
            _resolve(root, as_seq, i, value, depth)


def _resolve(root: Any, container: Any, slot: Any, value: Any, depth: int) -> None:
    """`container[slot]` (a mapping's key or a sequence's index): its reference replaced by
    what it points at, or else the references inside it."""
    if _is_reference(value):
        found = _target(root, value, 0)
        if found is not None:
            container[slot] = found
    else:
        _walk(root, value, depth + 1)
