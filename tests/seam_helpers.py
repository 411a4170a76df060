"""Helpers for the delivery seam's tests: a recording subscriber and callback events."""

from __future__ import annotations

import asyncio
import time

from addvocals_async import CallbackEvent, Delivery, DeliveryResult
from addvocals_async._convert import wire


def event(task_id: str, callback_type: str = "text") -> CallbackEvent:
    """A callback event as the receiver parses it."""
    body = {"code": 200, "msg": "ok", "data": {"callbackType": callback_type, "task_id": task_id}}
    return wire.structure_callback(body)


def delivery(ref: str, task_id: str, callback_type: str = "text") -> Delivery:
    return Delivery(ref, event(task_id, callback_type))


class Recorder:
    """A ``Subscriber`` that keeps what it is told and answers ``answer``."""

    def __init__(self, answer: DeliveryResult = DeliveryResult.ACCEPTED) -> None:
        self.answer = answer
        self.got: list[Delivery] = []
        self.closed = 0
        self.availability: list[bool] = []

    def __repr__(self) -> str:
        return f"Recorder(got={len(self.got)})"

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        self.got.append(delivery)
        return self.answer

    def seam_closed(self) -> None:
        self.closed += 1

    def seam_available(self, available: bool) -> None:
        self.availability.append(available)

    @property
    def types(self) -> list[str]:
        return [d.event.callback_type for d in self.got]

    async def wait_for(self, count: int, timeout: float = 3.0) -> None:
        """Until at least ``count`` deliveries came (a Redis replay is a round trip away)."""
        deadline = time.monotonic() + timeout
        while len(self.got) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(self.got)} deliveries, wanted {count}")
            await asyncio.sleep(0.005)


async def settle(seconds: float = 0.1) -> None:
    """Time for anything still on its way (a feed read, a replay) to arrive."""
    await asyncio.sleep(seconds)
