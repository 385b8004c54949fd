"""JSON logs: one object per line on stdout, with credentials redacted.

Whatever a log line quotes (a message, an exception, an `extra` field, a
library's record of a malformed request), the values of `Authorization`,
`Cookie` and `Set-Cookie`, Bearer tokens, `token=` parameters and anything
shaped like a JWT are replaced by `[redacted]` before the line is written.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


REDACTED = "[redacted]"
# Applied to the JSON text of a line: a value ends at a quote or an escaped line break.
_VALUE = r"""(?:[^"'\\]|\\(?![rn"]))*"""
_SECRETS = [
    (
        re.compile(
            r"""(?i)\b((?:proxy-)?authorization|(?:set-)?cookie)(\\?["']?\s*[:=]\s*\\?["']?)"""
            + _VALUE
        ),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), f"Bearer {REDACTED}"),
    (re.compile(r"""(?i)\b((?:access_)?token=)[^&\s"'\\]+"""), rf"\1{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
]


def redact(text: str) -> str:
    """`text` with credentials replaced by `[redacted]`."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; `extra={...}` fields are kept as keys."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, separators=(",", ":")))


def setup_logging(service: str, level: str = "INFO") -> None:
    """Route every logger to stdout as JSON lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
