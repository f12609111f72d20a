"""YAML read with ruamel's round-trip loader, which keeps every node's position.

All lines returned here are 1-based, as editors and SARIF count them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

from dockmoat.ci.audit.yamlmerge import LenientConstructor, fold_merge_keys
from dockmoat.errors import ConfigError


def load(text: str) -> Any:
    """The first document of `text` that is not a GitLab `spec:` header."""
    docs = load_all(text)
    return docs[0] if docs else None


def load_all(text: str) -> list[Any]:
    """Every document of `text`, read the way CI systems read YAML.

    GitLab (Ruby's Psych) accepts several `<<:` merge keys in one mapping, later ones
    winning; ruamel refuses them, so they are folded into one `<<: [...]` first.
    Duplicate keys are accepted (the first one is kept), as Psych accepts them; custom
    tags such as `!reference` are kept as plain sequences and scalars; a timestamp
    that is no real date stays a string. A GitLab component's `spec:` header
    document is skipped.
    """
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = True
    yaml.Constructor = LenientConstructor
    try:
        with warnings.catch_warnings():
            # A reused anchor is valid YAML (the later one wins); no multi-line warning.
            warnings.simplefilter("ignore")
            nodes = list(yaml.compose_all(text))
        docs = []
        for node in nodes:
            if node is None:
                continue
            fold_merge_keys(node)
            docs.append(yaml.constructor.construct_document(node))
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"not valid YAML{where}: {problem}") from error
    except RecursionError as error:
        raise ConfigError("not auditable YAML: nested too deeply") from error
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as error:
        raise ConfigError(f"not valid YAML: {type(error).__name__}: {error}") from error
    if len(docs) > 1 and _is_spec_header(docs[0]):
        docs = docs[1:]
    return docs


def _is_spec_header(doc: Any) -> bool:
    return isinstance(doc, CommentedMap) and set(doc) == {"spec"}


def key_line(node: Any, key: Any, default: int) -> int:
    if isinstance(node, CommentedMap) and key in node:
        try:
            return int(node.lc.key(key)[0]) + 1
        except (KeyError, TypeError, AttributeError):
            return default
    return default


def value_line(node: Any, key: Any, default: int) -> int:
    if isinstance(node, CommentedMap) and key in node:
        try:
            return int(node.lc.value(key)[0]) + 1
        except (KeyError, TypeError, AttributeError):
            return default
    return default


def item_line(node: Any, index: int, default: int) -> int:
    if isinstance(node, CommentedSeq):
        try:
            return int(node.lc.item(index)[0]) + 1
        except (KeyError, TypeError, AttributeError, IndexError):
            return default
    return default


def node_line(node: Any, default: int) -> int:
    """Where a mapping or sequence starts."""
    if isinstance(node, CommentedMap | CommentedSeq):
        try:
            return int(node.lc.line) + 1
        except (TypeError, AttributeError):
            return default
    return default


def text_lines(value: Any, line: int) -> list[tuple[int, str]]:
    """The physical lines of a scalar that starts at `line`, each with its own number."""
    if not isinstance(value, str):
        return [(line, str(value))] if value is not None else []
    parts = value.split("\n")
    if isinstance(value, LiteralScalarString):
        # The indicator `|` sits on `line`; the content starts on the next one.
        return [(line + 1 + i, part) for i, part in enumerate(parts) if part.strip()]
    if isinstance(value, FoldedScalarString):
        return [(line + 1, value.replace("\n", " "))]
    return [(line, value.replace("\n", " "))]


def mapping(node: Any) -> CommentedMap | None:
    return node if isinstance(node, CommentedMap) else None


def sequence(node: Any) -> CommentedSeq | None:
    return node if isinstance(node, CommentedSeq) else None


def items(node: Any, line: int) -> Iterator[tuple[Any, int]]:
    """Each item of a sequence with its line (`line` where unknown); none for a non-sequence."""
    seq = sequence(node)
    if seq is None:
        return
    for i, item in enumerate(seq):
        yield item, item_line(seq, i, line)


def scalar_str(value: Any) -> str | None:
    """A scalar as the string a CI system would see, None for mappings/sequences/null."""
    if value is None or isinstance(value, CommentedMap | CommentedSeq):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def env_vars(node: Any, line: int) -> dict[str, tuple[str, int]]:
    """Environment as a mapping or a list of `KEY=VALUE`; pass-through keys are skipped."""
    out: dict[str, tuple[str, int]] = {}
    as_map = mapping(node)
    if as_map is not None:
        for key, value in as_map.items():
            text = value_text(value)
            if text is not None:
                out[str(key)] = (text, key_line(as_map, key, line))
        return out
    as_seq = sequence(node)
    if as_seq is not None:
        for i, item in enumerate(as_seq):
            if isinstance(item, str) and "=" in item:
                key, val = item.split("=", 1)
                out[key.strip()] = (val, item_line(as_seq, i, line))
    return out


def value_text(value: Any) -> str | None:
    """Variable values: GitLab also allows `{value: ..., description: ...}`."""
    as_map = mapping(value)
    if as_map is not None:
        return scalar_str(as_map.get("value"))
    return scalar_str(value)
