"""YAML as GitLab's Ruby parser reads it, where ruamel would refuse valid CI files.

- Several `<<:` merge keys in one mapping (GitLab accepts them; later ones win) are
  folded into one `<<: [...]` whose earlier entries win, as YAML's merge list says.
- A key written twice keeps its last value, as in Psych (ruamel would keep the first).
- A scalar that looks like a timestamp but is no real date (`2024-13-40`) stays text.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


def fold_merge_keys(root: Node) -> None:
    """Rewrite every mapping with more than one merge key into one with a merge list."""
    seen: set[int] = set()
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            _keep_last(node)
            _fold(node)
            for key, value in node.value:
                stack.extend((key, value))
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


def _is_merge(key: Node) -> bool:
    return bool(key.tag == MERGE_TAG)


def _keep_last(node: MappingNode) -> None:
    last: dict[tuple[str | None, str], int] = {}
    for index, (key, _) in enumerate(node.value):
        if isinstance(key, ScalarNode) and not _is_merge(key):
            last[(key.tag, str(key.value))] = index
    if len(last) == sum(1 for k, _ in node.value if isinstance(k, ScalarNode) and not _is_merge(k)):
        return
    node.value = [
        (k, v)
        for index, (k, v) in enumerate(node.value)
        if not isinstance(k, ScalarNode) or _is_merge(k) or last[(k.tag, str(k.value))] == index
    ]


def _fold(node: MappingNode) -> None:
    merges = [(k, v) for k, v in node.value if _is_merge(k)]
    if len(merges) < 2:
        return
    sources: list[Node] = []
    # Later merge keys win in GitLab; in a YAML merge list the first entry wins.
    for _, value in reversed(merges):
        if isinstance(value, SequenceNode):
            sources.extend(value.value)
        else:
            sources.append(value)
    key, first = merges[0]
    merged = SequenceNode(
        "tag:yaml.org,2002:seq", sources, start_mark=first.start_mark, end_mark=first.end_mark
    )
    out: list[tuple[Node, Node]] = []
    for k, v in node.value:
        if not _is_merge(k):
            out.append((k, v))
        elif k is key:
            out.append((k, merged))
    node.value = out


class LenientConstructor(RoundTripConstructor):
    """Round-trip construction that keeps an impossible date as the text it is."""

    def construct_yaml_timestamp(self, node: Any, values: Any = None) -> Any:
        try:
            return super().construct_yaml_timestamp(node, values)
        except (ValueError, OverflowError):
            return self.construct_scalar(node)


LenientConstructor.add_constructor(_TIMESTAMP_TAG, LenientConstructor.construct_yaml_timestamp)
