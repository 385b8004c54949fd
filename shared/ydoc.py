"""Every pycrdt call that may panic, guarded: a panic is a rejected update, never a crash.

yrs (pycrdt's Rust core) panics on some updates that parse, typically a pair
whose second one integrates against blocks the first left inconsistent
(`block_store.rs: Option::unwrap() on None`). pyo3 raises that as
`pyo3_runtime.PanicException`, a `BaseException` that `except Exception`
misses. Here any such panic, and pycrdt's own `ValueError`, becomes a
`RejectedUpdate` (a `ValueError`); a panic during an apply also says that the
document may now be inconsistent (`damaged`), so its owner rebuilds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from pycrdt import Doc

# pyo3_runtime is not importable as a module, so its PanicException is caught
# as a BaseException; these are never swallowed.
_NOT_PANICS = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)


class RejectedUpdate(ValueError):
    """An update (or state vector) pycrdt refused or panicked on."""

    def __init__(self, message: str, *, damaged: bool = False) -> None:
        super().__init__(message)
        self.damaged = damaged  # the document it was applied to may be inconsistent


@contextmanager
def rejecting(what: str, *, damages: bool = False) -> Iterator[None]:
    """Turn pycrdt's ValueError and Rust panics inside the block into RejectedUpdate.

    `damages`: a panic here may leave the document half-changed (an apply).
    """
    try:
        yield
    except (RejectedUpdate, *_NOT_PANICS):
        raise
    except ValueError as exc:  # pycrdt's refusal: the document is untouched
        raise RejectedUpdate(f"{what}: {exc}") from None
    except BaseException as exc:  # pyo3_runtime.PanicException (or another Rust-side error)  # noqa: BLE001
        raise RejectedUpdate(
            f"{what}: pycrdt failed ({type(exc).__name__}: {exc})", damaged=damages
        ) from None


def apply_update(doc: Doc, update: bytes) -> None:
    """Apply `update` to `doc`; RejectedUpdate (with `damaged` after a panic) when refused."""
    with rejecting("invalid Yjs update", damages=True):
        doc.apply_update(update)


def encode_diff(doc: Doc, state_vector: bytes | None = None) -> bytes:
    """What `doc` holds beyond `state_vector` (all of it when None), as one update."""
    with rejecting("cannot encode the document"):
        return doc.get_update(state_vector) if state_vector is not None else doc.get_update()


def encode_state(doc: Doc) -> bytes:
    """The state vector of `doc`."""
    with rejecting("cannot encode the state vector"):
        return doc.get_state()
