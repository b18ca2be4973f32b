"""JSON pointers (RFC 6901) over parsed JSON: parse, get, set (creating parents), remove.

``-`` as the last token of an array path appends. Setting through a missing parent creates objects;
setting through a value that is not a container is refused (returns False) rather than clobbering it.
"""

from __future__ import annotations

from typing import Any

_MISSING = object()


class PointerError(ValueError):
    pass


def parse_pointer(pointer: str) -> tuple[str, ...]:
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise PointerError(f"{pointer!r} is not a JSON pointer: it must start with '/' (e.g. /temperature)")
    tokens = []
    for raw in pointer[1:].split("/"):
        i = raw.find("~")
        while i >= 0:
            if i + 1 >= len(raw) or raw[i + 1] not in "01":
                raise PointerError(f"{pointer!r}: '~' must be followed by 0 or 1 (~0 is '~', ~1 is '/')")
            i = raw.find("~", i + 2)
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tuple(tokens)


def _index(container: list, token: str, *, for_insert: bool) -> int | None:
    if token == "-":
        return len(container) if for_insert else None
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        return None
    i = int(token)
    limit = len(container) + (1 if for_insert else 0)
    return i if i < limit else None


def get(doc: Any, tokens: tuple[str, ...], default: Any = None) -> Any:
    node = doc
    for token in tokens:
        if isinstance(node, dict):
            node = node.get(token, _MISSING)
        elif isinstance(node, list):
            i = _index(node, token, for_insert=False)
            node = node[i] if i is not None else _MISSING
        else:
            node = _MISSING
        if node is _MISSING:
            return default
    return node


def exists(doc: Any, tokens: tuple[str, ...]) -> bool:
    return get(doc, tokens, _MISSING) is not _MISSING


def set_value(doc: Any, tokens: tuple[str, ...], value: Any) -> bool:
    """Set (create or replace) the value at ``tokens``; False when the path cannot hold it."""
    if not tokens:
        return False
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            nxt = node.get(token, _MISSING)
            if nxt is _MISSING:
                nxt = node[token] = {}
            node = nxt
        elif isinstance(node, list):
            i = _index(node, token, for_insert=False)
            if i is None:
                return False
            node = node[i]
        else:
            return False
    last = tokens[-1]
    if isinstance(node, dict):
        node[last] = value
        return True
    if isinstance(node, list):
        i = _index(node, last, for_insert=True)
        if i is None:
            return False
        if i == len(node):
            node.append(value)
        else:
            node[i] = value
        return True
    return False


def remove(doc: Any, tokens: tuple[str, ...]) -> bool:
    """Remove the value at ``tokens``; False when there is none."""
    if not tokens:
        return False
    parent = get(doc, tokens[:-1], _MISSING)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list):
        i = _index(parent, last, for_insert=False)
        if i is not None:
            del parent[i]
            return True
    return False
