"""Restoring a document version as a new update (pure logic, no I/O).

History is never rewritten: restoring version V on top of the current
document C produces one ordinary Yjs update that, applied to C (and so to
every client holding C), makes the visible content equal to V's. Clients that
were offline merge it like any other edit.

A Yjs update does not record the type of a root (`doc.getText("t")` versus
`getMap`...), so each root's kind is inferred from its content: items with a
key belong to a map; XML nodes to an XML fragment; string content to a text;
anything else to an array. For each root, the update empties it in C and
refills it with a deep copy of V's content (text with its formatting
attributes, nested maps, arrays, XML elements with attributes, text and
embeds). Roots that exist only in C are emptied.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from shared import ydoc
from shared.compaction import build_doc


class RootKind(Enum):
    MAP = "map"
    TEXT = "text"
    ARRAY = "array"
    XML = "xml"


_TYPES = {RootKind.MAP: Map, RootKind.TEXT: Text, RootKind.ARRAY: Array, RootKind.XML: XmlFragment}


def _probe(update: bytes, name: str, kind: RootKind) -> Any:
    doc: Doc = Doc()
    ydoc.apply_update(doc, update)
    return doc.get(name, type=_TYPES[kind])


def infer_roots(update: bytes) -> dict[str, RootKind | None]:
    """Each root of the document and its inferred kind (None when it is empty)."""
    names = list(build_doc([update]).keys())
    kinds: dict[str, RootKind | None] = {}
    for name in names:
        if len(_probe(update, name, RootKind.MAP)) > 0:
            kinds[name] = RootKind.MAP
            continue
        items = list(_probe(update, name, RootKind.ARRAY))
        if not items:
            kinds[name] = None
        elif any(isinstance(item, (XmlElement, XmlText)) for item in items):
            kinds[name] = RootKind.XML
        elif str(_probe(update, name, RootKind.TEXT)):
            kinds[name] = RootKind.TEXT
        else:
            kinds[name] = RootKind.ARRAY
    return kinds


def restore_update(current: bytes, version: bytes) -> bytes:
    """The update that turns the document `current` into the content of `version`
    (RejectedUpdate, a ValueError, when pycrdt refuses or panics on either)."""
    with ydoc.rejecting("this version cannot be restored onto the document"):
        return _restore_update(current, version)


def _restore_update(current: bytes, version: bytes) -> bytes:
    current_kinds = infer_roots(current)
    version_kinds = infer_roots(version)
    target: Doc = Doc()
    ydoc.apply_update(target, current)
    source: Doc = Doc()
    ydoc.apply_update(source, version)
    before = target.get_state()
    with target.transaction():
        for name in sorted(set(current_kinds) | set(version_kinds)):
            kind = version_kinds.get(name) or current_kinds.get(name)
            if kind is None:
                continue
            root = target.get(name, type=_TYPES[kind])
            _clear(root)
            if version_kinds.get(name) is not None:
                _copy_into(root, source.get(name, type=_TYPES[kind]))
    return ydoc.encode_diff(target, before)


def _clear(shared: Any) -> None:
    if isinstance(shared, Map):
        for key in list(shared.keys()):
            del shared[key]
    elif isinstance(shared, (Text, XmlText, Array)):
        if len(shared):
            del shared[0 : len(shared)]
    elif isinstance(shared, (XmlFragment, XmlElement)):
        children = shared.children
        if len(children):
            del children[0 : len(children)]


def _prelim(value: Any) -> Any:
    """An empty, not-yet-integrated shared type of the same kind, or the value itself."""
    if isinstance(value, Map):
        return Map()
    if isinstance(value, Array):
        return Array()
    if isinstance(value, XmlText):
        return XmlText()
    if isinstance(value, XmlElement):
        return XmlElement(value.tag)
    if isinstance(value, XmlFragment):
        return XmlFragment()
    if isinstance(value, Text):
        return Text()
    return value


def _is_shared(value: Any) -> bool:
    return isinstance(value, (Map, Array, Text, XmlText, XmlElement, XmlFragment))


def _copy_into(target: Any, source: Any) -> None:
    """Fill the integrated, empty `target` with a deep copy of `source` (same kind)."""
    if isinstance(source, Map):
        for key, value in source.items():
            target[key] = _prelim(value)
            if _is_shared(value):
                _copy_into(target[key], value)
    elif isinstance(source, (Text, XmlText)):
        chunks = source.diff()
        # Every chunk names every attribute (None = unset), so that nothing is
        # inherited from the chunk before it.
        keys = {key for _, attrs in chunks for key in (attrs or {})}
        position = 0
        for chunk, attrs in chunks:
            full = {key: None for key in keys} | dict(attrs or {})
            if isinstance(chunk, str):
                target.insert(position, chunk, full)
                position += len(chunk)
            else:
                embed = chunk.to_py() if _is_shared(chunk) else chunk
                target.insert_embed(position, embed, full)
                position += 1
        if isinstance(source, XmlText):
            for key, value in list(source.attributes):  # type: ignore[call-overload]  # pycrdt: __iter__ -> Iterable
                target.attributes[key] = value
    elif isinstance(source, Array):
        for index, value in enumerate(source):
            target.append(_prelim(value))
            if _is_shared(value):
                _copy_into(target[index], value)
    elif isinstance(source, (XmlElement, XmlFragment)):
        if isinstance(source, XmlElement):
            for key, value in list(source.attributes):  # type: ignore[call-overload]  # pycrdt: __iter__ -> Iterable
                target.attributes[key] = value
        for index, child in enumerate(source.children):
            target.children.append(_prelim(child))
            _copy_into(target.children[index], child)
