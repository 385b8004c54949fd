"""shared/ydoc_edit.py: JSON edits made on a pycrdt document, checked through the update alone."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text, XmlFragment, XmlText

from shared.protocol import EMPTY_UPDATE
from shared.ydoc_edit import MAX_SAFE_INTEGER, Edit, EditError, edit_update
from shared.ydoc_json import update_to_json

pytestmark = pytest.mark.unit


def project() -> bytes:
    """A document with a Map, an Array, a Text and an XmlFragment root, nested types and a
    plain object under the Map."""
    doc: Doc = Doc()
    doc["meta"] = Map(
        {"title": "T", "info": {"a": {}}, "pages": Array([Map({"blocks": Array(["b0"])})])}
    )
    doc["list"] = Array([1, 2, 3])
    doc["body"] = Text("héllo 😀 world")
    doc["xml"] = XmlFragment([XmlText("x")])
    return doc.get_update()


def edited(current: bytes, *edits: Edit) -> dict[str, Any]:
    """The document after applying the update `edits` make to a copy of `current`."""
    update = edit_update(current, edits)
    doc: Doc = Doc()
    doc.apply_update(current)
    doc.apply_update(update)
    return update_to_json(doc.get_update())


def error_of(current: bytes, *edits: Edit) -> EditError:
    with pytest.raises(EditError) as caught:
        edit_update(current, edits)
    return caught.value


def test_set_and_delete_keys_of_root_and_nested_maps() -> None:
    result = edited(
        project(),
        Edit("set", "meta", key="title", value="New"),
        Edit("set", "meta", key="extra", value={"a": [1, None, True], "b": 0.5}),
        Edit("set", "meta", key="none", value=None),
        Edit("set", "meta.pages.0", key="name", value="p1"),
        Edit("delete", "meta.pages.0", key="blocks"),
    )
    assert result["meta"] == {
        "title": "New",
        "extra": {"a": [1, None, True], "b": 0.5},
        "none": None,
        "info": {"a": {}},
        "pages": [{"name": "p1"}],
    }


def test_insert_and_delete_in_arrays() -> None:
    result = edited(
        project(),
        Edit("insert", "list", index=0, value=[0]),
        Edit("insert", "list", index=4, value=["end", {"k": "v"}]),
        Edit("delete", "list", index=1, length=2),
        Edit("insert", "meta.pages.0.blocks", index=1, value=["b1", "b2"]),
    )
    assert result["list"] == [0, 3, "end", {"k": "v"}]
    assert result["meta"]["pages"][0]["blocks"] == ["b0", "b1", "b2"]


def test_text_indices_count_characters_not_bytes() -> None:
    result = edited(
        project(),
        Edit("insert", "body", index=7, value=" big"),  # right after the emoji
        Edit("delete", "body", index=0, length=6),  # "héllo "
        Edit("insert", "body", index=0, value="¡"),
    )
    assert result["body"] == "¡😀 big world"


def test_missing_and_empty_roots_take_the_type_the_edit_implies() -> None:
    doc: Doc = Doc()
    doc["emptied"] = Array([1])
    del doc["emptied"][0]
    result = edited(
        doc.get_update(),
        Edit("set", "settings", key="lang", value="es"),
        Edit("insert", "notes", index=0, value="hi"),
        Edit("insert", "emptied", index=0, value=["back"]),
    )
    assert result == {"settings": {"lang": "es"}, "notes": "hi", "emptied": ["back"]}


def test_later_edits_see_earlier_ones() -> None:
    result = edited(
        b"\x00\x00",
        Edit("insert", "log", index=0, value=["a"]),
        Edit("insert", "log", index=1, value=["b"]),
        Edit("set", "m", key="k", value=1),
        Edit("set", "m", key="k", value=2),
    )
    assert result == {"log": ["a", "b"], "m": {"k": 2}}


def test_the_update_holds_only_the_edits() -> None:
    doc: Doc = Doc()
    doc.apply_update(project())
    del doc.get("body", type=Text)[0:3]  # a deletion the edits' update must not repeat
    current = doc.get_update()
    update = edit_update(current, [Edit("set", "meta", key="title", value="New")])
    assert len(update) < 40 < len(current)
    deleted = edit_update(current, [Edit("delete", "list", index=0, length=1)])
    assert len(deleted) < 20
    assert edited(current, Edit("delete", "list", index=0, length=1))["list"] == [2, 3]
    assert edit_update(current, [Edit("insert", "list", index=0, value=[])]) == EMPTY_UPDATE
    assert edit_update(current, [Edit("insert", "body", index=0, value="")]) == EMPTY_UPDATE


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (Edit("set", "meta.nothing", key="k", value=1), "path_not_found"),
        (Edit("set", "meta.pages.1", key="k", value=1), "path_not_found"),
        (Edit("set", "meta.pages.x", key="k", value=1), "path_not_found"),
        (Edit("set", "meta.pages.¹", key="k", value=1), "path_not_found"),
        (Edit("set", "fresh.sub", key="k", value=1), "path_not_found"),
        (Edit("delete", "meta", key="nothing"), "path_not_found"),
        (Edit("insert", "list", index=4, value=[1]), "index_out_of_range"),
        (Edit("delete", "list", index=2, length=2), "index_out_of_range"),
        (Edit("insert", "body", index=15, value="x"), "index_out_of_range"),
        (Edit("delete", "fresh", index=0, length=1), "index_out_of_range"),
        (Edit("set", "list", key="k", value=1), "invalid_edit"),
        (Edit("delete", "body", key="k"), "invalid_edit"),
        (Edit("insert", "list", index=0, value="text"), "invalid_edit"),
        (Edit("insert", "body", index=0, value=["x"]), "invalid_edit"),
        (Edit("delete", "meta", index=0, length=1), "invalid_edit"),
        (Edit("set", "meta.title", key="k", value=1), "invalid_edit"),  # a plain value
        (Edit("set", "meta.info.a", key="k", value=1), "invalid_edit"),  # inside a plain value
        (Edit("set", "list.0.k", key="k", value=1), "path_not_found"),  # a number has no keys
        (Edit("insert", "xml", index=0, value=["x"]), "invalid_edit"),
        (Edit("set", "meta", key=None, value=1), "invalid_edit"),
        (Edit("set", "meta", key="k", index=0, value=1), "invalid_edit"),
        (Edit("insert", "list", value=[1]), "invalid_edit"),
        (Edit("delete", "list", index=0), "invalid_edit"),
        (Edit("delete", "meta", key="title", index=0, length=1), "invalid_edit"),
        (Edit("delete", "list", index=-1, length=1), "invalid_edit"),
        (Edit("delete", "list", index=0, length=0), "invalid_edit"),
        (Edit("set", "", key="k", value=1), "invalid_edit"),
        (Edit("set", "meta..pages", key="k", value=1), "invalid_edit"),
        (Edit("bogus", "meta", key="k", value=1), "invalid_edit"),  # type: ignore[arg-type]
    ],
)
def test_each_refusal_has_its_code(edit: Edit, code: str) -> None:
    assert error_of(project(), edit).code == code


@pytest.mark.parametrize(
    "value",
    [
        MAX_SAFE_INTEGER + 1,
        -MAX_SAFE_INTEGER - 1,
        float("nan"),
        float("inf"),
        [1, {"deep": [float("-inf")]}],
        {"bytes": b"x"},
        {1: "not a string key"},
    ],
)
def test_values_must_be_json_a_yjs_number_can_hold(value: object) -> None:
    error = error_of(project(), Edit("set", "meta", key="k", value=value))
    assert error.code == "invalid_edit"


def test_the_largest_safe_integers_are_kept_exactly() -> None:
    result = edited(
        project(),
        Edit("set", "meta", key="max", value=MAX_SAFE_INTEGER),
        Edit("set", "meta", key="min", value=-MAX_SAFE_INTEGER),
    )
    assert (result["meta"]["max"], result["meta"]["min"]) == (MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER)


def test_a_failing_edit_makes_no_update_at_all() -> None:
    current = project()
    good = Edit("set", "meta", key="title", value="changed")
    error = error_of(current, good, Edit("insert", "list", index=99, value=[1]))
    assert error.code == "index_out_of_range"
    # a value refused before any edit is made, wherever it is in the list
    assert error_of(current, good, Edit("set", "m", key="k", value=float("nan"))).code == "invalid_edit"
    assert edited(current, good)["meta"]["title"] == "changed"
