"""The simulator's callback sender: POSTs each callback the way the real API does.

One attempt, then retries 1, 5 and 15 minutes (scaled) after any attempt that got no 2xx
within the 15 s reply timeout, then nothing more. kie signs each POST when the account has
a webhook key. Every attempt, answered or not, is recorded as a ``Delivery``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import secrets
import time
from typing import Any

import aiohttp
import yarl

from ._records import Delivery, SimTask
from ._state import Background, SimState, logger
from ._wire import callback_body, oracle_signature

__all__ = ["CallbackSender"]

_STALE_SIGNATURE_AGE = 600


def _is_loopback(url: str) -> bool:
    try:
        host = yarl.URL(url).host
    except (TypeError, ValueError):
        return False
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CallbackSender:
    """Delivers a task's callbacks to its ``callBackUrl``, with the documented retries."""

    def __init__(self, state: SimState, background: Background, *, hmac_key: bytes | None) -> None:
        self._state = state
        self._background = background
        self._hmac_key = hmac_key
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        """Open the HTTP session; call from within the running event loop."""
        # One connection per callback: a receiver that restarts between two callbacks
        # must not make the second one fail on a stale pooled connection.
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        self._session = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(self, task: SimTask, callback_type: str) -> None:
        """Send one callback now; on failure, schedule the documented retries."""
        state = self._state
        has_tracks = callback_type in ("first", "complete")
        body = callback_body(
            task,
            callback_type,
            create_time=state.create_time_value(task) if has_tracks else "",
            include_source=state.include_source_fields,
            error_data=state.error_data,
        )
        if not await self._attempt(task, callback_type, body, 0):
            self._background.spawn(
                self._retry(task, callback_type, body),
                name=f"addvocals-sim-retry-{task.task_id}-{callback_type}",
            )

    def _headers(self, task: SimTask) -> dict[str, str]:
        """kie's signing headers (``X-Webhook-Timestamp`` and ``X-Webhook-Signature``,
        an HMAC of ``taskId.timestamp``) when it has a key, or the wrong or stale ones the
        signature fault scenarios ask for; nothing otherwise."""
        mode = task.scenario
        if mode not in ("bad_signature", "stale_signature") and not (
            self._state.profile.signs_callbacks and self._hmac_key
        ):
            return {}
        key = self._hmac_key or secrets.token_bytes(16)
        timestamp = int(time.time())
        if mode == "stale_signature":
            timestamp -= _STALE_SIGNATURE_AGE
        if mode == "bad_signature":
            key = key + b"-not-the-account-key"
        return {
            "X-Webhook-Timestamp": str(timestamp),
            "X-Webhook-Signature": oracle_signature(key, task.task_id, timestamp),
        }

    async def _retry(self, task: SimTask, callback_type: str, body: dict[str, Any]) -> None:
        for attempt, delay in enumerate(self._state.retry_delays, start=1):
            await asyncio.sleep(self._state.scaled(delay))
            if await self._attempt(task, callback_type, body, attempt):
                return

    async def _attempt(
        self, task: SimTask, callback_type: str, body: dict[str, Any], attempt: int
    ) -> bool:
        """POST ``body`` to the task's callback URL once and record how it went."""
        assert self._session is not None
        state = self._state
        headers = {"Content-Type": "application/json", **self._headers(task)}
        delivery = Delivery(
            task_id=task.task_id,
            callback_type=callback_type,
            attempt=attempt,
            url=task.callback_url,
            body=body,
            headers=headers,
            at=time.monotonic(),
        )
        try:
            if not state.allow_remote_callbacks and not _is_loopback(task.callback_url):
                delivery.error = "not sent: the callback host is not loopback"
            else:
                timeout = aiohttp.ClientTimeout(
                    total=max(state.scaled(state.callback_timeout), state.min_callback_timeout)
                )
                async with self._session.post(
                    task.callback_url,
                    data=json.dumps(body).encode(),
                    headers=headers,
                    timeout=timeout,
                ) as response:
                    await response.read()
                    delivery.status = response.status
        except asyncio.TimeoutError:
            delivery.error = "timeout: no answer within the callback timeout"
        except (aiohttp.ClientError, ValueError, OSError) as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        finally:
            delivery.answered_at = time.monotonic()
            state.deliveries.append(delivery)
        logger.debug(
            "callback %s for task %s attempt %d: %s",
            callback_type,
            task.task_id,
            attempt,
            delivery.status if delivery.error is None else delivery.error,
        )
        return delivery.ok
