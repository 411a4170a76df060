"""The pending store: submits recorded before they are sent, so a restart resumes them.

Every submit made through a receiver is recorded *before* it is sent (the reference of
its callback URL and the request), then its task id once the answer names it, and it is
removed when the task ends. After a crash or a deploy, ``client.resume()`` turns every
record back into a ``VocalTask``, including a submit whose answer was lost
(``maybe_submitted=True``): its callbacks reveal the task through the recorded URL, so
the caller finds the task it paid for instead of submitting again.

``SQLitePendingStore`` is the embedded default: the standard library's sqlite3 in a file
you name, written off the event loop by one thread of its own. ``addvocals_async.redis``
has one for many hosts.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

from ._convert import parse_json

if TYPE_CHECKING:
    import sqlite3

__all__ = ["PendingStore", "PendingSubmit", "SQLitePendingStore"]

_T = TypeVar("_T")

DEFAULT_MAX_AGE = 3 * 24 * 3600.0
"""Records older than this are dropped: generated files are kept about 14 days, but a task
that has not ended in three days never will."""


@attrs.frozen(kw_only=True)
class PendingSubmit:
    """One recorded submit: ``ref`` names its callback URL, ``task_id`` is ``None`` until
    the answer (or a callback) names the task, ``request`` is the body as sent."""

    ref: str
    task_id: str | None = None
    request: Mapping[str, Any] = attrs.field(factory=dict, hash=False)
    created_at: float = attrs.field(factory=time.time)


class PendingStore(Protocol):
    """Where submits are recorded until their task ends."""

    async def record(self, submit: PendingSubmit) -> None:
        """Keep ``submit`` (called before it is sent)."""
        ...

    async def bind(self, ref: str, task_id: str) -> None:
        """The submit sent with ``ref`` created ``task_id``."""
        ...

    async def remove(self, ref: str) -> None:
        """Forget the submit sent with ``ref`` (its task ended, or it surely created none)."""
        ...

    async def pending(self) -> list[PendingSubmit]:
        """Every submit still recorded, oldest first."""
        ...

    async def aclose(self) -> None: ...


class SQLitePendingStore:
    """A ``PendingStore`` in a SQLite file, for one host.

    Writes go through one thread of the store's own, in order, so the event loop never
    waits on the disk. WAL journaling: a crash loses at most the last write, never the
    file. Records older than ``max_age`` seconds are dropped when read.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_age: float = DEFAULT_MAX_AGE) -> None:
        self.path = os.fspath(path)
        self.max_age = max_age
        from concurrent.futures import ThreadPoolExecutor

        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="addvocals-pending")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLitePendingStore(path={self.path!r})"

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            import sqlite3  # with the first write: not every client keeps a pending store

            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS pending (ref TEXT PRIMARY KEY, task_id TEXT, "
                "request TEXT NOT NULL, created_at REAL NOT NULL)"
            )
            self._db = db
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._closed:
            raise RuntimeError("this pending store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connect()))

    async def record(self, submit: PendingSubmit) -> None:
        row = (submit.ref, submit.task_id, json.dumps(dict(submit.request)), submit.created_at)
        await self._run(
            lambda db: db.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)", row)
        )

    async def bind(self, ref: str, task_id: str) -> None:
        await self._run(
            lambda db: db.execute("UPDATE pending SET task_id = ? WHERE ref = ?", (task_id, ref))
        )

    async def remove(self, ref: str) -> None:
        await self._run(lambda db: db.execute("DELETE FROM pending WHERE ref = ?", (ref,)))

    async def pending(self) -> list[PendingSubmit]:
        oldest = time.time() - self.max_age

        def read(db: sqlite3.Connection) -> list[tuple[str, str | None, str, float]]:
            db.execute("DELETE FROM pending WHERE created_at < ?", (oldest,))
            return list(
                db.execute(
                    "SELECT ref, task_id, request, created_at FROM pending ORDER BY created_at"
                )
            )

        return [
            PendingSubmit(ref=ref, task_id=task_id, request=_decode(request), created_at=created)
            for ref, task_id, request, created in await self._run(read)
        ]

    async def aclose(self) -> None:
        if self._closed:
            return
        if self._db is not None:
            db = self._db
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._closed = True
        self._executor.shutdown(wait=False)


def _decode(text: str) -> Mapping[str, Any]:
    value = parse_json(text)
    return value if isinstance(value, dict) else {}
