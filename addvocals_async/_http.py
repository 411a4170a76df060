"""The HTTP transport: one place that sends requests to the API and reads its answers.

``Transport`` owns an ``aiohttp.ClientSession`` (or borrows the caller's), sends to any
URL (the API host, a provider's upload host) with a JSON or multipart body, maps every
answer to data or to the precise error, and runs the never-pay-twice retry policy:

- the JSON envelope's ``code`` decides whatever the HTTP status; the HTTP status decides
  only when there is no envelope (a proxy page, an empty body);
- a submit is sent again only when the API surely created nothing (rate limits,
  maintenance, a connection that never opened); anything ambiguous is raised with
  ``maybe_submitted=True``; reads (details, credits) are retried on anything transient.

The first attempt runs straight through: the retry loop costs nothing until a request
fails. Retries are logged on ``addvocals_async.http`` with the reason, the attempt and
the wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import yarl

from ._config import RetryPolicy
from ._convert import parse_json
from ._errors import APIConnectionError, APIError, APITimeoutError, MaintenanceError
from ._providers import Outcome, ProviderProfile, classify_submit, make_api_error, retry_outcome
from ._signing import Secret
from ._version import __version__

__all__ = ["MAX_ANSWER_BYTES", "Transport", "parse_envelope_code", "parse_retry_after"]

log = logging.getLogger("addvocals_async.http")

MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""The largest API answer read; a record-info answer is a few kilobytes."""
USER_AGENT = f"addvocals_async/{__version__}"

BodyFactory = Callable[[], Any]
"""Makes a request body (``aiohttp.FormData``, bytes, …) afresh for each attempt."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date); ``None`` for
    anything else. It never raises: it runs on answers to submits that did create a task."""
    if not value:
        return None
    value = value.strip()
    try:
        if value.isascii() and value.isdigit():
            return float(value)
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)  # "-0000": UTC, zone not stated
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError, OverflowError):
        return None


def parse_envelope_code(code: object) -> int | None:
    """The envelope's ``code`` as an int: an int, or a short string of ASCII digits.
    Anything else (``"²"``, thousands of digits, a float, a bool) is no code at all."""
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str):
        text = code.strip()
        if text.isascii() and text.isdigit() and len(text) <= 9:
            return int(text)
    return None


class Transport:
    """Sends requests with the API key, reads envelopes, retries what is safe to retry.

    ``session`` is borrowed when given (proxies, tracing, connection limits are the
    caller's) and made on first use otherwise; ``aclose()`` closes only a session it made.
    """

    def __init__(
        self,
        *,
        api_key: Secret,
        profile: ProviderProfile,
        request_timeout: float,
        retry: RetryPolicy,
        session: aiohttp.ClientSession | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> None:
        """``timeout`` replaces the default ``ClientTimeout(total=request_timeout)`` (an
        upload: a long total, with ``request_timeout`` as the stall limit of each read)."""
        self._auth = {"Authorization": f"Bearer {api_key.reveal().decode()}"}
        self.profile = profile
        self.request_timeout = request_timeout
        self._timeout = timeout or aiohttp.ClientTimeout(total=request_timeout)
        self.retry = retry
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        """The event loop the session was first used in: an aiohttp session serves one."""

    def __repr__(self) -> str:
        return f"Transport(provider={self.profile.name!r}, api_key=***)"

    @property
    def closed(self) -> bool:
        return self._closed or (self._session is not None and self._session.closed)

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session requests go through (made on first use).

        A session belongs to the event loop it was first used in; used from another (the
        client kept across two ``asyncio.run`` calls), aiohttp would fail with a bare
        ``RuntimeError`` ("Event loop is closed") or hang, so that is refused here with an
        ``APIConnectionError`` that says what to do. Nothing has been sent then.
        """
        if self._closed:
            raise RuntimeError("this client is closed")
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self._loop is None:
            self._loop = running
        elif running is not None and running is not self._loop:
            raise APIConnectionError(
                "this client's HTTP session belongs to another event loop (an earlier "
                "asyncio.run?) and cannot be used from this one: create the client inside "
                "the coroutine that uses it, or one client per asyncio.run"
            )
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT}, timeout=self._timeout
            )
        return self._session

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None and self._owns_session:
            await self._session.close()

    async def call(
        self,
        method: str,
        url: yarl.URL,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        body: BodyFactory | None = None,
        submit: bool = False,
        attempts: int | None = None,
    ) -> Any:
        """Send with retries; return the envelope's ``data`` or raise the precise error.
        ``attempts`` overrides the policy's (a task's poll makes one: its schedule retries)."""
        _ = self.session  # a client used from another event loop fails here, not retried
        try:
            return await self._send(method, url, params, json_body, body, submit)
        except (APIError, APIConnectionError) as exc:
            limit = attempts or self.retry.attempts
            if limit <= 1 or retry_outcome(self.profile, exc, submit=submit) is not Outcome.RETRY:
                raise
            first_error = exc
        return await self._retry(method, url, params, json_body, body, submit, limit, first_error)

    async def _retry(
        self,
        method: str,
        url: yarl.URL,
        params: Mapping[str, str] | None,
        json_body: Mapping[str, Any] | None,
        body: BodyFactory | None,
        submit: bool,
        limit: int,
        error: APIError | APIConnectionError,
    ) -> Any:
        """Attempts 2..``limit``, each after its wait, within the policy's total time."""
        policy = self.retry
        started = time.monotonic()
        for attempt in range(2, limit + 1):
            wait = self._wait_after(error, attempt - 1)
            if policy.timeout is not None and time.monotonic() - started + wait > policy.timeout:
                raise error
            log.info(
                "%s %s failed (%s); attempt %d of %d in %.1f s",
                method,
                url.path,
                _reason(error),
                attempt,
                limit,
                wait,
            )
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                return await self._send(method, url, params, json_body, body, submit)
            except (APIError, APIConnectionError) as exc:
                if retry_outcome(self.profile, exc, submit=submit) is not Outcome.RETRY:
                    raise
                error = exc
        raise error

    def _wait_after(self, error: BaseException, retries_so_far: int) -> float:
        retry_after: float | None = getattr(error, "retry_after", None)
        if retry_after is not None:
            return self.retry.retry_after(retry_after)
        if isinstance(error, MaintenanceError):
            return self.retry.maintenance()
        return self.retry.backoff(retries_so_far)

    async def _send(
        self,
        method: str,
        url: yarl.URL,
        params: Mapping[str, str] | None,
        json_body: Mapping[str, Any] | None,
        body: BodyFactory | None,
        submit: bool,
    ) -> Any:
        what = f"{method} {url.path}"
        try:
            async with self.session.request(
                method,
                url,
                params=params,
                json=json_body,
                data=body() if body is not None else None,
                headers=self._auth,
                timeout=self._timeout,  # even on a borrowed session
                # The API never redirects: a 3xx is an answer without an envelope (a POST
                # followed after a 302 becomes a GET, and the upload its answer is for
                # was never sent).
                allow_redirects=False,
            ) as response:
                raw = await _read_bounded(response, submit=submit, what=what)
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except aiohttp.ConnectionTimeoutError as exc:
            raise APITimeoutError(f"{what}: could not connect in time") from exc
        except aiohttp.ClientConnectorError as exc:
            raise APIConnectionError(f"{what}: could not connect: {exc.os_error}") from exc
        except asyncio.TimeoutError as exc:
            stall = self._timeout.sock_read
            if isinstance(exc, aiohttp.ServerTimeoutError) and stall is not None:
                why = f"nothing received for {stall:g} s"  # a read stalled, not the total
            else:
                why = f"no answer within {self._timeout.total or self.request_timeout:g} s"
            raise APITimeoutError(f"{what}: {why}", maybe_submitted=submit) from exc
        except aiohttp.ClientError as exc:
            raise APIConnectionError(
                f"{what}: the connection failed: {type(exc).__name__}", maybe_submitted=submit
            ) from exc
        try:
            return self._parse(status, raw, retry_after, submit=submit)
        except APIError as exc:
            # Decided here, where the error is made, not in the retry loop: a caller who
            # makes one attempt must still learn that a 5xx may have created a task.
            exc.maybe_submitted = submit and classify_submit(self.profile, exc) is Outcome.AMBIGUOUS
            raise

    def _parse(self, status: int, raw: bytes, retry_after: float | None, *, submit: bool) -> Any:
        envelope = parse_json(raw) if raw else None
        code = parse_envelope_code(envelope.get("code")) if isinstance(envelope, dict) else None
        if code is not None:
            assert isinstance(envelope, dict)
            if code == 200:
                return envelope.get("data")
            msg = envelope.get("msg")
            raise make_api_error(
                self.profile,
                code,
                msg if isinstance(msg, str) else "",
                http_status=status,
                retry_after=retry_after,
            )
        if 200 <= status < 300:
            raise APIConnectionError(
                f"the API answered HTTP {status} without its JSON envelope", maybe_submitted=submit
            )
        raise make_api_error(
            self.profile,
            status,
            f"HTTP {status} with no JSON envelope (a proxy or gateway answered)",
            http_status=status,
            from_envelope=False,
            retry_after=retry_after,
        )


async def _read_bounded(response: aiohttp.ClientResponse, *, submit: bool, what: str) -> bytes:
    """The whole answer, refusing one over ``MAX_ANSWER_BYTES`` without reading it all."""
    length = response.content_length
    if length is not None:
        if length > MAX_ANSWER_BYTES:
            raise APIConnectionError(
                f"{what}: the answer is {length} bytes, over the {MAX_ANSWER_BYTES} allowed",
                maybe_submitted=submit,
            )
        return await response.read()
    raw = bytearray()
    async for chunk in response.content.iter_chunked(65536):
        raw += chunk
        if len(raw) > MAX_ANSWER_BYTES:
            raise APIConnectionError(
                f"{what}: the answer is over the {MAX_ANSWER_BYTES} bytes allowed",
                maybe_submitted=submit,
            )
    return bytes(raw)


def _reason(error: BaseException) -> str:
    if isinstance(error, APIError):
        return f"{type(error).__name__} {error.code}"
    return str(error)
