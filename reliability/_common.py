"""What every figure shares: a table row, a raw HTTP/1.1 client for hostile requests, a
watch on the loop's exceptions and error logs, the process's memory, callback bodies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from addvocals_async import AddVocalsClient, CallbackReceiver, PollPolicy, RetryPolicy
from addvocals_async.testing import Simulator

__all__ = [
    "REQUEST",
    "ErrorWatch",
    "Row",
    "callback_json",
    "percentile",
    "raw_request",
    "rss_bytes",
    "sim_client",
    "track_json",
]


REQUEST: dict[str, Any] = {
    "upload_url": "https://cdn.example.org/instrumental.mp3",
    "prompt": "A calm piano ballad",
    "title": "Quiet Harbour",
    "style": "Jazz",
    "negative_tags": "Metal",
}
"""The required fields of every submit the figures make."""


def sim_client(sim: Simulator, receiver: CallbackReceiver, **options: Any) -> AddVocalsClient:
    """A client of ``sim`` through ``receiver``: no submit throttle (the simulator's limit
    is what a figure sets), retries without waits, fast polls; ``options`` override."""
    settings: dict[str, Any] = {
        "throttle": False,
        "retry": RetryPolicy.no_wait(),
        "poll": PollPolicy.fast(),
        **options,
    }
    return AddVocalsClient(sim.api_key, base_url=sim.base_url, receiver=receiver, **settings)


@attrs.define
class Row:
    """One line of the table: what was tried, how many times, what came out, the goal."""

    figure: str
    tried: str
    count: int
    outcome: str
    goal: str
    met: bool


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/<pid>/status")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Counter(logging.Handler):
    """Counts records and keeps the first message only: a kept record's traceback would hold
    the frames, and with them the requests, of everything it counts."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = record.getMessage()[:120]


class ErrorWatch:
    """Counts what the loop's exception handler sees and the ERROR records logged on the
    ``aiohttp`` and ``addvocals_async`` loggers while it is installed."""

    def __init__(self) -> None:
        self.loop_exceptions: list[dict[str, Any]] = []
        self._handler = _Counter()

    @property
    def total(self) -> int:
        return len(self.loop_exceptions) + self._handler.count

    def describe(self) -> str:
        first = ""
        if self.loop_exceptions:
            first = f"; first: {self.loop_exceptions[0].get('message')!r}"
        elif self._handler.first is not None:
            first = f"; first: {self._handler.first!r}"
        return f"{len(self.loop_exceptions)} loop exc, {self._handler.count} ERROR logs{first}"

    @contextmanager
    def installed(self) -> Iterator[ErrorWatch]:
        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(
            lambda _loop, context: self.loop_exceptions.append({"message": context.get("message")})
        )
        loggers = [logging.getLogger("aiohttp"), logging.getLogger("addvocals_async")]
        for logger in loggers:
            logger.addHandler(self._handler)
        try:
            yield self
        finally:
            loop.set_exception_handler(previous)
            for logger in loggers:
                logger.removeHandler(self._handler)


async def raw_request(
    host: str,
    port: int,
    head: bytes,
    body: bytes = b"",
    *,
    timeout: float = 10.0,
    cut_after: int | None = None,
) -> int | None:
    """Send raw bytes on a fresh connection and return the answer's status; ``None`` when
    the connection ended without an answer (``cut_after`` closes it after that many body
    bytes, a sender vanishing mid-body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(head)
        if cut_after is not None:
            writer.write(body[:cut_after])
            await writer.drain()
            return None
        writer.write(body)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            return None
        return int(parts[1])
    except (ConnectionError, asyncio.IncompleteReadError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def track_json(
    task_id: str, index: int, *, host: str = "https://cdn.example.org"
) -> dict[str, Any]:
    """A plausible finished track of ``task_id`` (snake_case, as callbacks carry it)."""
    return {
        "id": f"{task_id[:8]}-{index}",
        "title": "Quiet Harbour",
        "model_name": "chirp-v4",
        "audio_url": f"{host}/{task_id}/{index}.mp3",
        "stream_audio_url": f"{host}/{task_id}/{index}.stream",
        "image_url": f"{host}/{task_id}/{index}.jpg",
        "prompt": "A calm piano ballad",
        "createTime": "2025-01-01 12:00:00",
        "duration": 181.5,
    }


def callback_json(
    task_id: str, callback_type: str = "complete", *, host: str = "https://cdn.example.org"
) -> dict[str, Any]:
    """A callback body naming ``task_id``: ``complete`` with two tracks on ``host``."""
    data: dict[str, Any] = {"callbackType": callback_type, "task_id": task_id, "data": []}
    if callback_type in ("first", "complete"):
        data["data"] = [track_json(task_id, i, host=host) for i in range(2)]
    if callback_type == "error":
        return {"code": 500, "msg": "failed", "data": {**data, "data": None}}
    return {"code": 200, "msg": "ok", "data": data}


def post_head(path: str, length: int | None, extra: str = "") -> bytes:
    """A request head for ``path``: Content-Length, or chunked when ``length`` is None."""
    framing = (
        f"Content-Length: {length}\r\n"
        if length is not None
        else ("Transfer-Encoding: chunked\r\n")
    )
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{framing}{extra}Connection: close\r\n\r\n"
    ).encode("latin-1")


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def deadline(seconds: float) -> float:
    return time.monotonic() + seconds


def rng(seed: int) -> random.Random:
    return random.Random(seed)
