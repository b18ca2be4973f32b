"""YAML composed into nodes that remember their line, so validation errors can point at it.

``yaml.safe_load`` forgets positions; composing keeps ``start_mark`` on every node. Scalars are
constructed with the safe constructor (so ``yes``, ``1e3`` and dates mean what YAML says).
Duplicate keys are errors here: YAML itself would silently keep the last one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from .errors import PolicyError, PolicyIssue

Kind = Literal["map", "seq", "scalar"]
MAX_DEPTH = 64
_PLAIN_TAGS = (
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
)  # policies are shallow; a deeper document is a mistake or an attack


@dataclass(frozen=True, slots=True)
class Node:
    kind: Kind
    value: Any  # map: dict[str, Node]; seq: list[Node]; scalar: the constructed Python value
    line: int  # 1-based
    key_lines: dict[str, int] = field(default_factory=dict)  # map only: line of each key

    def plain(self) -> Any:
        """The value without positions (for values copied verbatim into requests)."""
        if self.kind == "map":
            return {k: v.plain() for k, v in self.value.items()}
        if self.kind == "seq":
            return [v.plain() for v in self.value]
        return self.value


def compose(text: str, source: str = "<policy>") -> Node | None:
    """The document's root node, or None for an empty document. Raises :class:`PolicyError`."""
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters here, before any parsing
    except yaml.YAMLError as exc:
        raise PolicyError([PolicyIssue(0, "", f"not valid YAML: {exc}", source)]) from None
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        issues: list[PolicyIssue] = []
        node = _convert(loader, root, "", issues, source, 0)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise PolicyError([PolicyIssue(line, "", f"not valid YAML: {exc.problem or exc.context}", source)]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([PolicyIssue(0, "", f"not valid YAML: {exc}", source)]) from None
    except RecursionError:  # PyYAML composes recursively: a depth bomb ends here
        raise PolicyError([PolicyIssue(0, "", f"nested deeper than {MAX_DEPTH} levels", source)]) from None
    finally:
        loader.dispose()
    if issues:
        raise PolicyError(issues)
    return node


def _convert(loader: yaml.SafeLoader, node: yaml.Node, path: str, issues: list[PolicyIssue], source: str, depth: int) -> Node:
    line = node.start_mark.line + 1
    if depth > MAX_DEPTH:
        issues.append(PolicyIssue(line, path, f"nested deeper than {MAX_DEPTH} levels", source))
        return Node("scalar", None, line)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        issues.append(PolicyIssue(line, path, f"unsupported YAML tag {node.tag!r}", source))
        return Node("scalar", None, line)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<)
        values: dict[str, Node] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = loader.construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                issues.append(PolicyIssue(key_line, path, f"keys must be strings, not {type(key).__name__}", source))
                continue
            child = f"{path}.{key}" if path else key
            if key in values:
                issues.append(PolicyIssue(key_line, child, f"duplicate key (first on line {key_lines[key]})", source))
                continue
            values[key] = _convert(loader, value_node, child, issues, source, depth + 1)
            key_lines[key] = key_line
        return Node("map", values, line, key_lines)
    if isinstance(node, yaml.SequenceNode):
        return Node(
            "seq", [_convert(loader, item, f"{path}[{i}]", issues, source, depth + 1) for i, item in enumerate(node.value)], line
        )
    return Node("scalar", loader.construct_object(node), line)
