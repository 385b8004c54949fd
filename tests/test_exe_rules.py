"""The pure rules of eXeLearning's asset routes (services/gateway/exe_rules.py)."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from services.gateway.errors import ApiError
from services.gateway.exe_rules import (
    candidate_names,
    chunk_upload_id,
    client_id,
    content_disposition,
    folder_path,
    header_value,
    missing_chunks,
)

pytestmark = pytest.mark.unit

CID = "0b58ae10-6c21-b80e-90ea-e8e2a660eab3"


def test_client_ids() -> None:
    assert client_id(CID) == CID
    assert client_id("a_b-C9") == "a_b-C9"
    for bad in ("", "a/b", "../x", "a.b", "é", "x" * 65, None, 5):
        with pytest.raises(ApiError) as refused:
            client_id(bad)
        assert refused.value.status == 400 and refused.value.code == "invalid_client_id"


def test_candidate_names() -> None:
    assert candidate_names("pic.png", CID) == ["pic.png", "pic-0b58ae10.png", f"{CID}.png"]
    assert candidate_names("archive.tar.gz", CID) == [
        "archive.tar.gz",
        "archive.tar-0b58ae10.gz",
        f"{CID}.gz",
    ]
    assert candidate_names("README", CID) == ["README", "README-0b58ae10", CID]
    assert candidate_names(None, CID) == [CID]
    assert candidate_names("", CID) == [CID]


def test_folder_paths() -> None:
    assert folder_path(None) == "" and folder_path("") == "" and folder_path("/") == ""
    assert folder_path("/a//b/") == "a/b"
    assert folder_path("a/../b/./c") == "a/b/c"
    assert folder_path(" imágenes / fotos ") == "imágenes / fotos"
    for bad in ("a\\b", "a\x00b", "a\nb", "x" * 1025):
        with pytest.raises(ApiError) as refused:
            folder_path(bad)
        assert refused.value.code == "invalid_folder_path"


def test_header_values_are_ascii_and_decode_back() -> None:
    for text in ("plain name.png", "café 100%.png", 'a"b\\c', "日本語/ruta", ""):
        encoded = header_value(text)
        assert encoded.isascii() and not re.search(r"[\x00-\x1f\x7f\"\\]", encoded)
        assert unquote(encoded) == text
    assert header_value("plain name.png") == "plain name.png"


def test_content_disposition_has_the_ascii_filename_first() -> None:
    value = content_disposition("café 100%.png")
    assert value == (
        "inline; filename=\"caf%C3%A9 100%25.png\"; filename*=UTF-8''caf%C3%A9%20100%25.png"
    )
    # what eXeLearning's editor does with it: the first filename, unquoted, URI-decoded
    first = re.search(r"filename[^;=\n]*=((['\"]).*?\2|[^;\n]*)", value)
    assert first is not None and unquote(first.group(1).strip('"')) == "café 100%.png"


def test_chunk_upload_ids() -> None:
    one = chunk_upload_id("p", 1, "ident")
    assert re.fullmatch(r"[0-9a-f]{32}", one)
    assert one == chunk_upload_id("p", 1, "ident")
    assert len({one, chunk_upload_id("p", 2, "ident"), chunk_upload_id("q", 1, "ident")}) == 3
    assert chunk_upload_id("p", 1, "a\x00") != chunk_upload_id("p", 1, "a")


def test_missing_chunks() -> None:
    assert missing_chunks({1, 2, 3}, 3) == []
    assert missing_chunks({3, 1}, 4) == [2, 4]
    assert missing_chunks(set(), 2) == [1, 2]
