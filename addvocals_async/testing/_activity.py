"""The simulator's activity log: one line per API request and per callback attempt, for
a person watching ``addvocals simulate`` (on stderr; ``--quiet`` turns it off)."""

from __future__ import annotations

import asyncio
from typing import TextIO

from ._records import Delivery, RecordedRequest

__all__ = ["describe_delivery", "describe_request", "report_activity"]

TICK = 0.1
"""How often the log looks for new records (seconds)."""


def describe_request(rec: RecordedRequest) -> str:
    task = f" task {rec.task_id}" if rec.task_id else ""
    code = f" code {rec.code}" if rec.code is not None and rec.code != rec.status else ""
    return f"api      {rec.method} {rec.path} -> HTTP {rec.status}{code}{task}"


def describe_delivery(delivery: Delivery) -> str:
    # The URL's last segment is the receiver's token, a capability: never printed.
    head, _, _token = delivery.url.rpartition("/")
    where = f"{head}/<token>" if head else delivery.url
    outcome = f"HTTP {delivery.status}" if delivery.status is not None else delivery.error
    retry = f" (retry {delivery.attempt})" if delivery.attempt else ""
    return (
        f"callback {delivery.callback_type:<8} task {delivery.task_id} -> {where}: {outcome}{retry}"
    )


def _answered(record: RecordedRequest | Delivery) -> bool:
    if isinstance(record, RecordedRequest):
        return record.status is not None
    return record.status is not None or record.error is not None


async def report_activity(
    requests: list[RecordedRequest], deliveries: list[Delivery], stream: TextIO
) -> None:
    """Write a line for each request and callback attempt (the simulator's growing record
    lists) once it is answered; runs until cancelled, then writes what is answered by then."""
    seen_requests = seen_deliveries = 0
    waiting: list[RecordedRequest | Delivery] = []

    def flush() -> None:
        nonlocal seen_requests, seen_deliveries
        waiting.extend(requests[seen_requests:])
        seen_requests = len(requests)
        waiting.extend(deliveries[seen_deliveries:])
        seen_deliveries = len(deliveries)
        done = [r for r in waiting if _answered(r)]
        if not done:
            return
        waiting[:] = [r for r in waiting if not _answered(r)]
        for record in sorted(done, key=lambda r: r.at):
            line = (
                describe_request(record)
                if isinstance(record, RecordedRequest)
                else describe_delivery(record)
            )
            stream.write(line + "\n")
        stream.flush()

    try:
        while True:
            flush()
            await asyncio.sleep(TICK)
    finally:
        flush()
