"""JSON edits of a Yjs document: set a map key, insert or delete in an array or a text, under a
`a.b.0` path, all in one transaction, answered as the Yjs update that makes them.

A path names a root first (its type told by its content, as `shared.ydoc_json.root` tells it),
then keys of maps and indices of arrays, the syntax of `shared.ydoc_json.select`. A root that
is missing or empty takes the type the edit implies: `set` a Map, `insert` of a string a Text,
`insert` of a list an Array. Text indices count characters (Unicode code points) of the text as
`GET ?format=json` shows it. Values are JSON, stored as plain Yjs values (a nested object or
list is one value, not a shared type); numbers must be finite, integers within ±(2^53 - 1),
since Yjs stores every number as a double.

Pure logic: the document comes in as bytes and the edits go out as bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from shared.protocol import EMPTY_UPDATE
from shared.ydoc import apply_update, rejecting
from shared.ydoc_json import is_index, root

MAX_SAFE_INTEGER = 2**53 - 1

Op = Literal["set", "insert", "delete"]
Editable = Map | Array | Text


class EditError(Exception):
    """An edit that cannot be made; `code` is invalid_edit, path_not_found or index_out_of_range."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Edit:
    """One edit. set: `key` and `value`; insert: `index` and `value` (a string into a Text, a
    list of values into an Array); delete: `key` (of a Map), or `index` and `length`."""

    op: Op
    path: str
    key: str | None = None
    index: int | None = None
    length: int | None = None
    value: Any = None


def edit_update(current: bytes, edits: Sequence[Edit]) -> bytes:
    """The Yjs update that makes `edits`, in order and in one transaction, on the document
    `current` builds (EMPTY_UPDATE when they change nothing). EditError, and no update at all,
    when any of them cannot be made; RejectedUpdate when pycrdt refuses the document or them."""
    for edit in edits:
        _check_shape(edit)
    doc: Doc = Doc()
    apply_update(doc, current)
    # the transaction's own update: a diff against the state vector would repeat every
    # deletion the document ever had, and would not be empty when the edits change nothing
    made: list[bytes] = []
    doc.observe(lambda event: made.append(event.update))
    # an EditError must not pass through `rejecting`, which would turn it into a RejectedUpdate
    failure: EditError | None = None
    with rejecting("cannot apply the edits"), doc.transaction():
        try:
            for edit in edits:
                _apply(doc, edit)
        except EditError as exc:
            failure = exc
    if failure is not None:
        raise failure  # the scratch document is dropped half-edited: nothing leaves it
    return made[0] if made else EMPTY_UPDATE


def _check_shape(edit: Edit) -> None:
    """What an edit can be checked for without the document: its fields and its value."""
    if "" in edit.path.split("."):
        _invalid(edit, "the path must be dot-separated names and indices, none empty")
    wanted = {
        "set": edit.key is not None and edit.index is None and edit.length is None,
        "insert": edit.key is None and edit.index is not None and edit.length is None,
        "delete": (edit.key is None) != (edit.index is None and edit.length is None)
        and (edit.index is None) == (edit.length is None),
    }
    if edit.op not in wanted:
        _invalid(edit, "the op must be set, insert or delete")
    if not wanted[edit.op]:
        _invalid(edit, f"'{edit.op}' takes {_FIELDS[edit.op]}")
    if edit.op == "insert" and not isinstance(edit.value, (str, list)):
        _invalid(edit, "insert takes a string (into a text) or a list of values (into an array)")
    if (edit.index is not None and edit.index < 0) or (edit.length is not None and edit.length < 1):
        _invalid(edit, "index must be >= 0 and length >= 1")
    if edit.op != "delete":
        _check_json(edit, edit.value)


_FIELDS = {
    "set": "key and value",
    "insert": "index and value",
    "delete": "key, or index and length",
}


def _check_json(edit: Edit, value: Any) -> None:
    pending = [value]
    while pending:
        item = pending.pop()
        if item is None or isinstance(item, (bool, str)):
            continue
        if isinstance(item, int):
            if abs(item) > MAX_SAFE_INTEGER:
                _invalid(edit, "an integer beyond ±(2^53 - 1), which a Yjs number cannot hold")
        elif isinstance(item, float):
            if not math.isfinite(item):
                _invalid(edit, "numbers must be finite")
        elif isinstance(item, list):
            pending += item
        elif isinstance(item, dict) and all(isinstance(key, str) for key in item):
            pending += item.values()
        else:
            _invalid(edit, f"{type(item).__name__} is not a JSON value")


def _apply(doc: Doc, edit: Edit) -> None:
    target = _target(doc, edit)
    if edit.op == "set":
        _map(edit, target)[_key(edit)] = edit.value
    elif edit.op == "insert":
        _insert(edit, target)
    elif edit.key is not None:
        target_map = _map(edit, target)
        if edit.key not in target_map:
            raise EditError("path_not_found", f"'{edit.path}' has no key '{edit.key}'")
        del target_map[edit.key]
    else:
        _delete_range(edit, target)


def _target(doc: Doc, edit: Edit) -> Editable:
    """The shared type `edit.path` names; a missing or empty root as the type `edit` implies."""
    name, *steps = edit.path.split(".")
    found = root(doc, name)
    if found is None and not steps:
        return doc.get(name, type=_implied(edit))
    node: Any = found
    for done, step in enumerate(steps):
        if isinstance(node, Map) and step in node:
            node = node[step]
        elif isinstance(node, Array) and is_index(step) and int(step) < len(node):
            node = node[int(step)]
        else:
            at = ".".join([name, *steps[:done]])
            if isinstance(node, (dict, list)):
                _invalid(edit, f"'{at}' is a plain value, edited only whole: set it")
            raise EditError("path_not_found", f"'{edit.path}' names nothing (at '{step}' of '{at}')")
    if type(node) not in (Map, Array, Text):
        kind = type(node).__name__ if isinstance(node, (XmlFragment, XmlElement, XmlText)) else "a plain value"
        _invalid(edit, f"'{edit.path}' is {kind}, not a Map, an Array or a Text: set it whole")
    return node  # type: ignore[no-any-return]


def _implied(edit: Edit) -> type[Editable]:
    if edit.op == "insert":
        return Text if isinstance(edit.value, str) else Array
    return Map if edit.key is not None else Array


def _insert(edit: Edit, target: Editable) -> None:
    index = _index(edit)
    if isinstance(target, Text) and isinstance(edit.value, str):
        content = str(target)
        _within(edit, index, target, len(content))
        target.insert(_offset(content, index), edit.value)
    elif isinstance(target, Array) and isinstance(edit.value, list):
        _within(edit, index, target, len(target))
        for at, item in enumerate(edit.value):
            target.insert(index + at, item)
    else:
        wanted = "a string" if isinstance(target, Text) else "a list of values"
        _invalid(edit, f"'{edit.path}' is a {type(target).__name__}: insert takes {wanted}")


def _delete_range(edit: Edit, target: Editable) -> None:
    index, length = _index(edit), edit.length or 0
    if isinstance(target, Text):
        content = str(target)
        _within(edit, index + length, target, len(content))
        start = _offset(content, index)
        del target[start : start + _offset(content[index:], length)]
    elif isinstance(target, Array):
        _within(edit, index + length, target, len(target))
        del target[index : index + length]
    else:
        _invalid(edit, f"'{edit.path}' is a Map: delete takes a key")


def _offset(content: str, index: int) -> int:
    """The position pycrdt counts (UTF-8 bytes) of character `index` of `content`."""
    return len(content[:index].encode("utf-8"))


def _within(edit: Edit, end: int, target: Editable, length: int) -> None:
    if end > length:
        unit = "characters" if isinstance(target, Text) else "items"
        raise EditError("index_out_of_range", f"'{edit.path}' has {length} {unit}, {end} is past them")


def _map(edit: Edit, target: Editable) -> Map[Any]:
    if not isinstance(target, Map):
        _invalid(edit, f"'{edit.path}' is a {type(target).__name__}, not a Map: a key needs a Map")
    return target


def _key(edit: Edit) -> str:
    assert edit.key is not None  # _check_shape
    return edit.key


def _index(edit: Edit) -> int:
    assert edit.index is not None  # _check_shape
    return edit.index


def _invalid(edit: Edit, message: str) -> NoReturn:
    raise EditError("invalid_edit", f"{edit.op} at '{edit.path}': {message}")
