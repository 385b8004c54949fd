"""A Yjs document decoded to JSON: every root type, and a `a.b.0` selection inside it.

A Yjs update does not say which type a root is (a client names it with
`doc.getMap(name)` etc.), so pycrdt lists a root it has only received as
untyped. Its content tells: a root with keyed entries is a Map, one holding
characters (Yjs text items, which an Array never holds) is a Text, one whose
items are all XML elements or texts is an XmlFragment, any other an Array. A
root holding nothing (everything deleted) has no type to tell and decodes to
`null`. Nested types carry their type in the update, so they decode as such.

The JSON shape of each kind (see README, "The document as JSON"):

- Map: an object; Array: an array; Text: its string, formatting and embeds dropped
  (what `Y.Text.toJSON()` answers);
- XmlFragment: `{"children": [...]}`; XmlElement: `{"nodeName", "attributes",
  "children"}`; XmlText: its string, formatting dropped;
- binary (`Uint8Array`): `{"base64": "..."}`; a subdocument: `{"subdocument": guid}`;
- numbers: integral ones as integers (like JavaScript prints them), NaN and infinities as
  `null` (like `JSON.stringify`); `undefined` as `null`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable
from typing import Any, cast

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from shared.ydoc import apply_update, rejecting

JSON = Any  # None | bool | int | float | str | list[JSON] | dict[str, JSON]


class NoSuchPath(LookupError):
    """A selection path that names nothing in the document."""


def update_to_json(update: bytes) -> dict[str, JSON]:
    """Every root of the document `update` builds, decoded: name -> JSON. RejectedUpdate
    when pycrdt refuses (or panics on) the update."""
    doc: Doc = Doc()
    apply_update(doc, update)
    with rejecting("cannot decode the document"):
        return {name: decode(root(doc, name)) for name in sorted(doc.keys())}


Root = Map | Text | Array | XmlFragment


def root(doc: Doc, name: str) -> Root | None:
    """Root `name` as the type its content tells (see the module docstring); None when it
    holds nothing (or does not exist). pycrdt may raise or panic: call it under `rejecting`."""
    as_map = doc.get(name, type=Map)
    if len(as_map):
        return as_map
    text = doc.get(name, type=Text)
    if str(text):
        return text
    items = list(doc.get(name, type=Array))
    if not items:
        return None
    if all(isinstance(item, (XmlElement, XmlText)) for item in items):
        return doc.get(name, type=XmlFragment)
    return doc.get(name, type=Array)


def decode(value: Any) -> JSON:
    """One value of the document (a shared type or a plain one) as JSON."""
    if isinstance(value, Map):
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, Array):
        return [decode(item) for item in value]
    if isinstance(value, XmlText):
        return _xml_text(value)
    if isinstance(value, Text):
        return str(value)
    if isinstance(value, XmlElement):
        return {
            "nodeName": value.tag,
            "attributes": {key: decode(item) for key, item in _attributes(value)},
            "children": [decode(child) for child in value.children],
        }
    if isinstance(value, XmlFragment):
        return {"children": [decode(child) for child in value.children]}
    if isinstance(value, Doc):
        return {"subdocument": value.guid}
    return _plain(value)


def _attributes(element: XmlElement) -> Iterable[tuple[str, Any]]:
    """An element's attributes (pycrdt's view declares an `__iter__` mypy cannot iterate)."""
    return cast("Iterable[tuple[str, Any]]", element.attributes)


def _xml_text(value: XmlText) -> str:
    """An XmlText's characters, its formatting and embeds dropped."""
    return "".join(insert for insert, _ in value.diff() if isinstance(insert, str))


def _plain(value: Any) -> JSON:
    """A plain (JSON-like) value: binary as base64, integral floats as integers, NaN and
    infinities as null (as `JSON.stringify` writes them)."""
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def select(document: JSON, path: str) -> JSON:
    """The part of `document` that `path` (`a.b.0`: keys and array indices, dot-separated)
    names; NoSuchPath when it names nothing."""
    value = document
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and is_index(step) and int(step) < len(value):
            value = value[int(step)]
        else:
            raise NoSuchPath(f"'{path}' names nothing in the document (at '{step}')")
    return value


def is_index(step: str) -> bool:
    """Whether a path step is an array index: ASCII digits only (`str.isdigit` takes `²` too)."""
    return step.isascii() and step.isdigit()
