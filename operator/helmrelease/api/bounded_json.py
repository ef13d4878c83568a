"""JSON decoding that never builds a Python object deeper than a bound, whatever the document's depth.

``json.loads`` raises ``RecursionError`` on documents nested ~1,000 deep, and objects a few hundred deep already
break recursive code later (``copy.deepcopy``, diffs, serializers). kube-apiserver stores up to 10,000 levels, so one
hostile object could take down every watch that decodes it. ``loads`` is ``json.loads`` for every document within
the bound (the fast path: a C-speed depth check, then ``json.loads`` itself); a deeper document is decoded
iteratively (ijson's event parser and an explicit stack) and each subtree past the bound becomes ``TOO_DEEP``, so
the rest of the object (its metadata above all) stays intact for the code that reports it.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Final

import ijson

from helmrelease.api.limits import DOCUMENT_DEPTH_MAX, TOO_DEEP

_PAIR: Final = re.compile(rb"\{\}|\[\]")
#: Every byte but the brackets and the quote, deleted by ``bytes.translate``.
_NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in b'{}[]"')
_OPEN: Final = frozenset({"start_map", "start_array"})
_CLOSE: Final = frozenset({"end_map", "end_array"})


def within_depth(data: bytes, max_depth: int) -> bool:
    """Whether valid JSON ``data`` nests maps and lists at most ``max_depth`` levels; C-speed string operations.

    Escaped backslashes, then escaped quotes, are removed, so the quotes left delimit strings; strings (which may
    hold brackets) are dropped, then each round removes the innermost empty pairs: the rounds needed to empty the
    brackets are the depth. For invalid JSON the answer is meaningless, and the decoder then raises anyway.
    """
    if data.count(b"{") + data.count(b"[") <= max_depth:
        return True
    structure = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    brackets = b"".join(structure.split(b'"')[::2])
    for _ in range(max_depth):
        if not brackets:
            return True
        brackets = _PAIR.sub(b"", brackets)
    return not brackets


def loads(data: bytes | str, *, max_depth: int = DOCUMENT_DEPTH_MAX) -> Any:
    """``json.loads``, except that maps and lists below level ``max_depth`` are replaced by ``TOO_DEEP``.

    Raises ``json.JSONDecodeError`` (a ``ValueError``) for a document that is not JSON.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if within_depth(raw, max_depth):
        return json.loads(data)
    try:
        return _build(raw, max_depth)
    except ijson.JSONError as error:
        raise json.JSONDecodeError(f"not valid JSON: {error}", raw.decode("utf-8", "replace"), 0) from None


def _build(raw: bytes, max_depth: int) -> Any:
    """The document from ijson's events with an explicit stack: no recursion, so no depth is too much."""
    root: Any = None
    stack: list[Any] = []
    key = ""
    skipping = 0

    def add(value: Any) -> None:
        nonlocal root
        if not stack:
            root = value
        elif isinstance(stack[-1], dict):
            stack[-1][key] = value
        else:
            stack[-1].append(value)

    for event, value in ijson.basic_parse(raw):
        if skipping:
            skipping += 1 if event in _OPEN else -1 if event in _CLOSE else 0
            if not skipping:
                add(TOO_DEEP)
        elif event == "map_key":
            key = value
        elif event in _OPEN:
            if len(stack) >= max_depth:
                skipping = 1
                continue
            container: Any = {} if event == "start_map" else []
            add(container)
            stack.append(container)
        elif event in _CLOSE:
            stack.pop()
        else:
            add(float(value) if isinstance(value, Decimal) else value)
    return root


def depth_of(value: Any) -> int:
    """Levels of maps and lists in ``value`` (a scalar is 0, ``{}`` is 1), counted without recursion."""
    if not isinstance(value, (dict, list)):
        return 0
    deepest = 1
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        node, level = pending.pop()
        deepest = max(deepest, level)
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                pending.append((child, level + 1))
    return deepest
