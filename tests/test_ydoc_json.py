"""shared/ydoc_json.py: documents built in pycrdt, decoded from their update alone."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText

from shared.ydoc import RejectedUpdate
from shared.ydoc_json import NoSuchPath, select, update_to_json

pytestmark = pytest.mark.unit


def decoded(doc: Doc) -> dict[str, object]:
    return update_to_json(doc.get_update())


def test_each_root_type_is_told_by_its_content() -> None:
    doc: Doc = Doc()
    doc["meta"] = Map({"title": "T", "n": 3, "ratio": 0.5, "ok": True, "none": None})
    doc["list"] = Array([1, "s", [1, 2], {"k": "v"}])
    doc["chars"] = Array(["a", "b"])
    doc["body"] = text = Text("hello")
    text.format(0, 2, {"bold": True})
    doc["xml"] = fragment = XmlFragment()
    fragment.children.append(XmlElement("p", {"class": "c"}, [XmlText("inner")]))
    fragment.children.append(XmlText("tail"))
    assert decoded(doc) == {
        "meta": {"title": "T", "n": 3, "ratio": 0.5, "ok": True, "none": None},
        "list": [1, "s", [1, 2], {"k": "v"}],
        "chars": ["a", "b"],
        "body": "hello",
        "xml": {
            "children": [
                {"nodeName": "p", "attributes": {"class": "c"}, "children": ["inner"]},
                "tail",
            ]
        },
    }


def test_nested_types_binary_and_subdocuments() -> None:
    doc: Doc = Doc()
    doc["m"] = root = Map[Any]()
    root["nested"] = Map({"items": Array([Map({"x": 1})])})
    root["text"] = Text("t")
    root["blob"] = b"\x00\x01\xff"
    sub: Doc = Doc()
    root["sub"] = sub
    root["xml"] = fragment = XmlFragment()
    fragment.children.append(XmlElement("div", {}, [XmlElement("br")]))
    assert decoded(doc) == {
        "m": {
            "nested": {"items": [{"x": 1}]},
            "text": "t",
            "blob": {"base64": "AAH/"},
            "sub": {"subdocument": sub.guid},
            "xml": {
                "children": [
                    {
                        "nodeName": "div",
                        "attributes": {},
                        "children": [{"nodeName": "br", "attributes": {}, "children": []}],
                    }
                ]
            },
        }
    }


def test_numbers_as_javascript_writes_them_and_xml_text_formatting_dropped() -> None:
    doc: Doc = Doc()
    doc["m"] = Map({"i": 2.0, "big": 2.0**60, "nan": float("nan"), "inf": float("-inf")})
    doc["x"] = fragment = XmlFragment()
    fragment.children.append(xml_text := XmlText("bold plain"))
    xml_text.format(0, 4, {"b": {}})
    result = decoded(doc)
    assert result["m"] == {"i": 2, "big": 2.0**60, "nan": None, "inf": None}
    assert isinstance(result["m"]["i"], int)  # type: ignore[index]
    assert result["x"] == {"children": ["bold plain"]}


def test_a_root_emptied_by_deletes_is_null() -> None:
    doc: Doc = Doc()
    doc["m"] = root = Map[int]({"k": 1})
    del root["k"]
    assert decoded(doc) == {"m": None}


def test_an_invalid_update_is_rejected() -> None:
    with pytest.raises(RejectedUpdate):
        update_to_json(b"\xff\xff\xff")


def test_select_walks_keys_and_indices() -> None:
    document = {"metadata": {"title": "T", "pages": [{"id": "a"}, {"id": "b"}]}}
    assert select(document, "metadata.title") == "T"
    assert select(document, "metadata.pages.1.id") == "b"
    assert select(document, "metadata") == document["metadata"]


@pytest.mark.parametrize(
    "path", ["nope", "metadata.pages.2", "metadata.pages.x", "metadata.pages.¹", "metadata.title.0", ""]
)
def test_select_a_path_naming_nothing(path: str) -> None:
    document = {"metadata": {"title": "T", "pages": [{"id": "a"}, {"id": "b"}]}}
    with pytest.raises(NoSuchPath):
        select(document, path)
