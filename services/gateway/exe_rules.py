"""Pure rules of eXeLearning's asset routes: client ids, stored names, folders, headers, chunks.

- A client id is eXeLearning's id of a file (a UUID laid out from its SHA-256): 1..64 of
  `[A-Za-z0-9_-]`, so it is safe in a path, a name and a header.
- The stored name of an upload by client id is the part's filename; when another asset (with
  another client id) has that name, `{stem}-{first 8 of clientId}{ext}`, else `{clientId}{ext}`
  (`candidate_names`; the caller takes the first one free, else 409).
- A folder path is `/`-separated segments, without empty, `.` or `..` segments.
- Header values are ASCII: everything else (and `%`, `"`, `\\`) is percent-encoded, so
  `decodeURIComponent` (what eXeLearning's editor applies to a Content-Disposition filename)
  gives the name back.
- A chunked upload's id is a digest of (project, user, resumableIdentifier), so every gateway
  finds the same state on the shared volume for the same upload.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import string
from urllib.parse import quote

from services.gateway.errors import bad_request

CLIENT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)
MAX_FOLDER_PATH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_SAFE = "".join(c for c in string.printable if c not in '%"\\' and c not in "\t\n\r\x0b\x0c")


def client_id(raw: object) -> str:
    """A valid client id, or a 400."""
    if not isinstance(raw, str) or not _CLIENT_ID.match(raw):
        raise bad_request(
            "'clientId' must be 1 to 64 letters, digits, '-' or '_'", code="invalid_client_id"
        )
    return raw


def candidate_names(filename: str | None, client: str) -> list[str]:
    """The names an upload by client id may take, in order of preference."""
    _, ext = posixpath.splitext(filename or "")
    if not filename:
        return [client]
    stem = filename[: len(filename) - len(ext)]
    return [filename, f"{stem}-{client[:8]}{ext}", f"{client}{ext}"]


def folder_path(raw: str | None) -> str:
    """The canonical folder path (`a/b`, or "" for the root), or a 400."""
    if raw is None:
        return ""
    if len(raw) > MAX_FOLDER_PATH or _CONTROL.search(raw) or "\\" in raw:
        raise bad_request(
            f"'folderPath' must be at most {MAX_FOLDER_PATH} characters, without control "
            "characters or backslashes",
            code="invalid_folder_path",
        )
    return "/".join(s for s in raw.strip().split("/") if s.strip() not in ("", ".", ".."))


def header_value(text: str) -> str:
    """`text` as an ASCII header value: non-ASCII characters, `%`, `"` and `\\` percent-encoded."""
    return quote(text, safe=_HEADER_SAFE)


def content_disposition(name: str) -> str:
    """`inline` with an ASCII `filename=` first (for clients that read only it) and the exact
    name in `filename*=` (RFC 6266)."""
    return f"inline; filename=\"{header_value(name)}\"; filename*=UTF-8''{quote(name, safe='')}"


def chunk_upload_id(project_uuid: str, user_id: int, identifier: str) -> str:
    """The id (32 hex digits, as a tus upload's) of a chunked upload's state."""
    key = f"{project_uuid}\x00{user_id}\x00{identifier}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def missing_chunks(present: set[int], total: int) -> list[int]:
    """The chunk numbers (1-based) of `total` not in `present`."""
    return [n for n in range(1, total + 1) if n not in present]
