"""A stateful fake of the Add Vocals API that runs real task lifecycles and calls you back.

``Simulator`` is an aiohttp server on 127.0.0.1 that answers the three endpoints the way a
chosen provider does (API-SPEC §1-§5), creates tasks that move through their stages on a
scaled clock, POSTs the documented callbacks to each task's ``callBackUrl`` with the
documented retry rules, and serves the audio and images it hands out. Scenarios script the
faults the real service shows (duplicates, reordering, lost callbacks, failures, ambiguous
submits), per task or by seeded probability, and every request and delivery is recorded so
a test can assert exactly what crossed the wire.

Time: every duration of the real API is divided by ``speed``. Rate limits are not scaled:
they guard against a client that hammers the API, which is a real-time property of the
client, whatever the simulated clock does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import sys
import time
import uuid
from collections.abc import Coroutine, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal, TextIO

import aiohttp
import attrs
import yarl
from aiohttp import web

from .._providers import ProviderProfile, get_provider
from ._media import jpeg_bytes, mp3_bytes
from ._records import Delivery, RecordedRequest, SimTask, SimTrack
from ._scenarios import (
    CREATED_FAULTS,
    FAILED_STATUSES,
    StageTimes,
    Step,
    check_options,
    failed_status_for,
    plan,
)
from ._wire import (
    CreateTimeMode,
    callback_body,
    details_data,
    dialect_for,
    envelope,
    format_create_time,
    oracle_signature,
    validate_submit,
)

__all__ = ["Simulator", "serve_forever"]

logger = logging.getLogger("addvocals_async.testing")

_STAGE_OF_STATUS: Mapping[str, str] = {
    "PENDING": "pending",
    "TEXT_SUCCESS": "text",
    "FIRST_SUCCESS": "first",
    "SUCCESS": "complete",
    "CALLBACK_EXCEPTION": "complete",
    **dict.fromkeys(FAILED_STATUSES, "failed"),
}
_DAY = 86_400.0
_STALE_SIGNATURE_AGE = 600
_HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_UPSTREAM_403 = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
)


@attrs.define
class _ScriptEntry:
    """A queued ``script()`` call: ``remaining`` tasks (or rejection rounds) still to go."""

    name: str
    options: dict[str, Any]
    remaining: int
    times_left: int


@attrs.frozen
class _Choice:
    """The scenario picked for one submit, and the queue entry it came from (if any)."""

    name: str
    options: Mapping[str, Any]
    entry: _ScriptEntry | None


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


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


class Simulator:
    """The Add Vocals API on 127.0.0.1, with its lifecycle, callbacks and faults.

    Use it as an async context manager (or ``await start()`` / ``await close()``)::

        async with Simulator(provider="kie", speed=1000, seed=0) as sim:
            sim.script("duplicates")
            ...  # point a client at sim.base_url with sim.api_key
            await sim.wait_idle()
            assert sim.callback_types(task_id) == ["text", "text", "first", ...]

    Keyword arguments (all optional):

    - ``provider``: ``"apibox"`` (default), ``"sunoapi"``, ``"kie"`` or a ``ProviderProfile``;
      switches codes, credits path, models, ``source_*`` fields and signing.
    - ``api_key``: the Bearer key accepted (random when omitted); ``host``, ``port``
      (127.0.0.1, 0 = any free port).
    - ``speed``: divides every duration of the real API: stages at about 30, 100 and 180 s
      (``stage_times``), callback retries 1, 5 and 15 minutes after a failed attempt
      (``retry_delays``), the 15 s callback timeout (``callback_timeout``, never below
      ``min_callback_timeout`` real seconds, so a busy test machine is not taken for a
      dead receiver) and file retention (``retention_days``). 1.0 is real time.
    - ``seed``: makes task and track ids, track data and ``mix`` draws reproducible.
    - ``scenario``, ``mix``: the default scenario, and probabilities of others for
      submits no ``script()`` entry claims (see ``SCENARIOS``).
    - ``webhook_hmac_key``: kie signs callbacks with it (§6); other providers sign nothing.
    - ``credits``, ``task_cost``: the balance, and what each created task takes from it.
    - ``rate_limit``: ``(creates, seconds)`` per sliding window (``None`` to disable);
      ``details_rate_limit``: record-info requests per task per second. Neither is scaled:
      they measure how hard a client hits the API, in real time.
    - ``create_time``: ``"string"``, ``"epoch_ms"`` or ``"alternate"`` (per message);
      ``error_data``: an error callback's ``data.data`` as ``"null"`` or ``"empty_list"``.
    - ``error_status``: ``"ok"`` answers errors as HTTP 200 with the code in the body (as
      documented), ``"mirror"`` also uses the code as the HTTP status.
    - ``legacy_details``: record-info tracks under ``response.data`` in snake_case;
      ``young_details_null``: the first N record-info answers per task have ``data: null``.
    - ``include_source_fields``: ``source_*`` and ``tags`` in callbacks (default: not on kie).
    - ``hang_seconds``: how long ``hang_after_create`` holds the answer (real seconds).
    - ``allow_remote_callbacks``: deliver to hosts other than loopback. Off by default so
      that a test submitting ``https://hooks.example.com/...`` sends nothing anywhere;
      such attempts are recorded as failed deliveries instead.

    Set ``maintenance = True`` to make every API call answer 455, or change ``credits``,
    ``default_scenario`` and ``mix`` at any time. The API key and the webhook HMAC key never
    appear in a repr or a log line.
    """

    def __init__(
        self,
        *,
        provider: str | ProviderProfile = "apibox",
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 1.0,
        seed: int | None = None,
        scenario: str = "normal",
        mix: Mapping[str, float] | None = None,
        webhook_hmac_key: str | bytes | None = None,
        credits: int = 1000,
        task_cost: int = 10,
        rate_limit: tuple[int, float] | None = (20, 10.0),
        details_rate_limit: int | None = 3,
        callback_timeout: float = 15.0,
        min_callback_timeout: float = 0.2,
        retry_delays: tuple[float, ...] = (60.0, 300.0, 900.0),
        stage_times: StageTimes | None = None,
        create_time: CreateTimeMode = "string",
        error_data: Literal["null", "empty_list"] = "null",
        error_status: Literal["ok", "mirror"] = "ok",
        legacy_details: bool = False,
        young_details_null: int = 0,
        retention_days: float = 14.0,
        include_source_fields: bool | None = None,
        hang_seconds: float = 30.0,
        allow_remote_callbacks: bool = False,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if create_time not in ("string", "epoch_ms", "alternate"):
            raise ValueError("create_time must be 'string', 'epoch_ms' or 'alternate'")
        if error_data not in ("null", "empty_list"):
            raise ValueError("error_data must be 'null' or 'empty_list'")
        if error_status not in ("ok", "mirror"):
            raise ValueError("error_status must be 'ok' or 'mirror'")
        self._profile = get_provider(provider)
        self._dialect = dialect_for(self._profile)
        self._api_key = api_key if api_key is not None else f"sim-{secrets.token_hex(12)}"
        if isinstance(webhook_hmac_key, str):
            webhook_hmac_key = webhook_hmac_key.encode()
        self._hmac_key = webhook_hmac_key
        self._host = host
        self._port = port
        self.speed = float(speed)
        self._rng = random.Random(seed)
        check_options(scenario, {})
        self._default_scenario = scenario
        self._mix: dict[str, float] = {}
        self.mix = mix or {}
        self.credits = credits
        self.task_cost = task_cost
        self.rate_limit = rate_limit
        self.details_rate_limit = details_rate_limit
        self.callback_timeout = callback_timeout
        self.min_callback_timeout = min_callback_timeout
        self.retry_delays = tuple(retry_delays)
        self.stage_times = stage_times or StageTimes()
        self.create_time: CreateTimeMode = create_time
        self.error_data: Literal["null", "empty_list"] = error_data
        self.error_status: Literal["ok", "mirror"] = error_status
        self.legacy_details = legacy_details
        self.young_details_null = young_details_null
        self.retention_days = retention_days
        if include_source_fields is None:
            include_source_fields = self._profile.name != "kie"
        self.include_source_fields = include_source_fields
        self.hang_seconds = hang_seconds
        self.allow_remote_callbacks = allow_remote_callbacks
        self.maintenance = False

        self.requests: list[RecordedRequest] = []
        self.deliveries: list[Delivery] = []
        self.tasks: dict[str, SimTask] = {}

        self._script: collections.deque[_ScriptEntry] = collections.deque()
        self._creates: collections.deque[float] = collections.deque()
        self._details_times: dict[str, collections.deque[float]] = {}
        self._create_time_flip = False
        self._background: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._closed = False
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._base_url: yarl.URL | None = None

    # ------------------------------------------------------------------ public surface

    @property
    def provider(self) -> str:
        """The provider profile's name: ``"apibox"``, ``"sunoapi"`` or ``"kie"``."""
        return self._profile.name

    @property
    def profile(self) -> ProviderProfile:
        """The provider profile in use (paths, code tables, models)."""
        return self._profile

    @property
    def api_key(self) -> str:
        """The Bearer key the simulated API accepts."""
        return self._api_key

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, the root the API paths hang from."""
        if self._base_url is None:
            raise RuntimeError("the simulator is not running; use 'async with Simulator()'")
        return str(self._base_url)

    @property
    def submit_url(self) -> str:
        """Where to POST a submit."""
        return str(self._url(self._profile.submit_path))

    @property
    def credits_url(self) -> str:
        """The provider's credits endpoint (kie's path differs)."""
        return str(self._url(self._profile.credits_path))

    def details_url(self, task_id: str) -> str:
        """record-info for ``task_id``."""
        return str(self._url(self._profile.details_path).with_query(taskId=task_id))

    @property
    def default_scenario(self) -> str:
        """The scenario of tasks that no ``script()`` entry and no ``mix`` choice claims."""
        return self._default_scenario

    @default_scenario.setter
    def default_scenario(self, name: str) -> None:
        check_options(name, {})
        self._default_scenario = name

    @property
    def mix(self) -> Mapping[str, float]:
        """Probabilities of scenarios for unscripted submits; the remainder (when they sum
        to less than 1) goes to ``default_scenario``. Sums above 1 are normalised."""
        return dict(self._mix)

    @mix.setter
    def mix(self, weights: Mapping[str, float]) -> None:
        for name, weight in weights.items():
            check_options(name, {})
            if weight < 0:
                raise ValueError(f"the weight of {name!r} must not be negative")
        self._mix = dict(weights)

    def script(self, scenario: str, count: int = 1, **options: Any) -> None:
        """Make the next ``count`` submits follow ``scenario`` (first in, first out), then
        fall back to the default.

        A scenario that rejects the submit (``rate_limited``, ``maintenance``, and
        ``upload_unreachable`` on kie) spends its turn on ``times`` rejected submits
        (default 1); the submit after them takes the next entry or the default.
        """
        check_options(scenario, options)
        if count < 1:
            raise ValueError("count must be at least 1")
        times = int(options.get("times", 1))
        self._script.append(_ScriptEntry(scenario, dict(options), count, times))

    async def start(self) -> None:
        """Bind the server and open the callback sender."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        if self._closed:
            raise RuntimeError("a closed simulator cannot be restarted")
        # One connection per callback: a receiver that restarts between two callbacks
        # must not make the second one fail on a stale pooled connection.
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        self._session = aiohttp.ClientSession(connector=connector)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await self.close()
            raise
        port = runner.addresses[0][1]
        self._base_url = yarl.URL.build(scheme="http", host=self._host, port=port)
        logger.debug("simulator (%s) listening on %s", self.provider, self._base_url)

    async def close(self) -> None:
        """Stop every lifecycle and delivery, answer hanging submits, and shut down."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        pending = list(self._background)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def wait_idle(self, timeout: float | None = 5.0) -> None:
        """Wait until every created task has run its lifecycle and every callback delivery,
        retries included, is over. Raises ``TimeoutError`` after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            pending = {task for task in self._background if not task.done()}
            if not pending:
                return
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"the simulator was still busy after {timeout} s")
            await asyncio.wait(pending, timeout=remaining)

    def count(
        self,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
        code: int | None = None,
    ) -> int:
        """How many recorded requests match every given criterion."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method)
            and (path is None or r.path == path)
            and (status is None or r.status == status)
            and (code is None or r.code == code)
        )

    def submits(self) -> list[RecordedRequest]:
        """Every request to the submit path, accepted or not, in arrival order."""
        return [r for r in self.requests if r.path == self._profile.submit_path]

    def submits_for(self, task_id: str) -> list[RecordedRequest]:
        """The submit request(s) that created ``task_id``."""
        return [r for r in self.submits() if r.task_id == task_id]

    def deliveries_for(self, task_id: str, callback_type: str | None = None) -> list[Delivery]:
        """Every delivery attempt for one task (optionally of one type), in sending order."""
        return [
            d
            for d in self.deliveries
            if d.task_id == task_id and (callback_type is None or d.callback_type == callback_type)
        ]

    def callback_types(self, task_id: str) -> list[str]:
        """The ``callbackType`` of each first attempt for ``task_id``, in sending order."""
        return [d.callback_type for d in self.deliveries_for(task_id) if d.attempt == 0]

    def __repr__(self) -> str:
        where = str(self._base_url) if self._base_url is not None else "not started"
        return (
            f"<Simulator provider={self.provider!r} at {where} speed={self.speed:g} "
            f"tasks={len(self.tasks)} api_key=<hidden>>"
        )

    # ---------------------------------------------------------------------- internals

    def _url(self, path: str) -> yarl.URL:
        return yarl.URL(self.base_url).with_path(path)

    def _scaled(self, real_seconds: float) -> float:
        return real_seconds / self.speed

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` as a tracked background task (cancelled on close)."""
        if self._closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("simulator task %s failed", task.get_name(), exc_info=task.exception())

    def _answer(
        self,
        rec: RecordedRequest,
        code: int,
        msg: str | None = None,
        data: Any = None,
        *,
        http_status: int | None = None,
    ) -> web.Response:
        """An envelope answer. Errors go out as HTTP 200 with the code in the body, as the
        docs list them, unless ``error_status="mirror"`` asks for the code as HTTP status."""
        if http_status is None:
            http_status = 200 if code == 200 or self.error_status == "ok" else code
        rec.code = code
        return web.json_response(envelope(code, msg, data), status=http_status)

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), self._api_key.encode())

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        """Record the request, route it, record the answer."""
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raw = b""
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={str(k): v for k, v in request.headers.items()},
            json=_parse_json(raw),
            at=time.monotonic(),
            body=raw,
        )
        self.requests.append(rec)
        response = await self._route(request, rec)
        if response is None:
            # Close the connection without a byte of answer; aiohttp's attempt to write
            # the placeholder below then goes nowhere.
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)
        rec.status = response.status
        return response

    async def _route(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse | None:
        path = request.path
        if path.startswith("/files/"):
            return self._serve_file(request, path)
        if path.startswith("/upstream/"):
            # Source URLs point at the upstream CDN, which in real traffic often refuses.
            return web.Response(status=403, text=_UPSTREAM_403, content_type="application/xml")
        if self.maintenance:
            return self._answer(rec, 455)
        profile = self._profile
        if path == profile.submit_path and request.method == "POST":
            return await self._submit(request, rec)
        if path == profile.details_path and request.method == "GET":
            return self._details(request, rec)
        if path == profile.credits_path and request.method == "GET":
            if not self._authorized(request):
                return self._answer(rec, 401, self._dialect.unauthorized_msg)
            return self._answer(rec, 200, data=self.credits)
        return self._answer(rec, 404, f"Not found: {request.method} {path}")

    # ------------------------------------------------------------------------- submit

    def _choose(self) -> _Choice:
        """The scenario for this submit: the head of the script, else a mix draw, else the
        default. Nothing is consumed until the submit's outcome is known."""
        if self._script:
            head = self._script[0]
            return _Choice(head.name, head.options, head)
        if self._mix:
            total = sum(self._mix.values())
            scale = total if total > 1 else 1.0
            draw = self._rng.random()
            cumulative = 0.0
            for name, weight in self._mix.items():
                cumulative += weight / scale
                if draw < cumulative:
                    return _Choice(name, {}, None)
        return _Choice(self._default_scenario, {}, None)

    def _consume(self, choice: _Choice, *, rejected: bool) -> None:
        entry = choice.entry
        if entry is None:
            return
        if rejected:
            entry.times_left -= 1
            if entry.times_left > 0:
                return
            entry.times_left = int(entry.options.get("times", 1))
        entry.remaining -= 1
        if entry.remaining <= 0 and self._script and self._script[0] is entry:
            self._script.popleft()

    def _rate_limited(self) -> bool:
        if self.rate_limit is None:
            return False
        limit, window = self.rate_limit
        now = time.monotonic()
        while self._creates and self._creates[0] <= now - window:
            self._creates.popleft()
        return len(self._creates) >= limit

    async def _submit(
        self, request: web.Request, rec: RecordedRequest
    ) -> web.StreamResponse | None:
        dialect = self._dialect
        if not self._authorized(request):
            return self._answer(rec, 401, dialect.unauthorized_msg)
        body = rec.json
        rejection = validate_submit(body, self._profile, dialect)
        if rejection is not None:
            return self._answer(rec, rejection.code, rejection.msg)
        assert isinstance(body, dict)
        choice = self._choose()
        if choice.name == "rate_limited":
            self._consume(choice, rejected=True)
            return self._answer(rec, int(choice.options.get("code", dialect.rate_limited)))
        if choice.name == "maintenance":
            self._consume(choice, rejected=True)
            return self._answer(rec, 455)
        if choice.name == "upload_unreachable" and dialect.sync_upload_error:
            self._consume(choice, rejected=True)
            return self._answer(rec, 451, choice.options.get("error_message"))
        if self._rate_limited():
            return self._answer(rec, dialect.rate_limited)
        if self.credits < self.task_cost:
            return self._answer(rec, dialect.no_credits)
        self._consume(choice, rejected=False)
        task = self._create_task(body, choice)
        rec.task_id = task.task_id

        steps = self._plan(task)
        started = time.monotonic()
        for step in steps:
            if step.early:
                await self._apply(task, step)
        self._spawn(
            self._run_lifecycle(task, [s for s in steps if not s.early], started),
            name=f"addvocals-sim-lifecycle-{task.task_id}",
        )

        name = choice.name
        if name == "server_error_after_create":
            return self._answer(rec, 500)
        if name == "http_502_after_create":
            return web.Response(status=502, text=_HTML_502, content_type="text/html")
        if name == "drop_after_create":
            return None
        if name == "hang_after_create":
            seconds = float(choice.options.get("seconds", self.hang_seconds))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)
            if self._closing.is_set():
                return None
        return self._answer(rec, 200, data={"taskId": task.task_id})

    def _create_task(self, body: dict[str, Any], choice: _Choice) -> SimTask:
        """Make the task record and its two tracks; charge the account."""
        task_id = f"{self._rng.getrandbits(128):032x}"
        model = body.get("model") or self._profile.default_model
        created = datetime.now(timezone.utc)
        created = created.replace(microsecond=created.microsecond // 1000 * 1000)
        lyrics = body.get("lyrics") or body.get("prompt") or "Oh, la la la"
        gender = {"m": "male vocals", "f": "female vocals"}.get(body.get("vocalGender") or "")
        tags = ", ".join(filter(None, (str(body["style"]).lower(), gender)))
        base = yarl.URL(self.base_url)
        tracks = []
        for index in range(2):
            track_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            files = base / "files" / task_id
            upstream = base / "upstream"
            tracks.append(
                SimTrack(
                    id=track_id,
                    index=index,
                    title=body["title"],
                    prompt=f"[Verse] {lyrics}"[:3000],
                    tags=tags,
                    model_name="chirp-" + str(model).lower().replace("_", "-"),
                    duration=round(self._rng.uniform(120.0, 240.0), 2),
                    create_time=created,
                    audio_url=str(files / f"{track_id}.mp3"),
                    stream_audio_url=str(files / f"{track_id}-stream.mp3"),
                    image_url=str(files / f"{track_id}.jpeg"),
                    source_audio_url=str(upstream / f"{track_id}.mp3"),
                    source_stream_audio_url=str(upstream / "stream" / track_id),
                    source_image_url=str(upstream / f"image_{track_id}.jpeg"),
                    frames=8 + 6 * index + self._rng.randrange(6),
                    gray=self._rng.randrange(40, 216),
                )
            )
        task = SimTask(
            task_id=task_id,
            scenario=choice.name,
            callback_url=body["callBackUrl"],
            request=body,
            tracks=tracks,
            created_at=time.monotonic(),
            options=dict(choice.options),
        )
        if choice.name in ("error", "fail_after_first", "failed_status_only"):
            code = int(choice.options.get("error_code", min(self._profile.callback_codes)))
            task.error_code = code
            task.error_message = choice.options.get("error_message") or self._failure_text(code)
        elif choice.name == "upload_unreachable":
            task.error_code = 451
            task.error_message = choice.options.get("error_message") or self._failure_text(451)
        self.credits -= self.task_cost
        self._creates.append(time.monotonic())
        self.tasks[task_id] = task
        return task

    def _failure_text(self, code: int) -> str:
        text = self._profile.describe_callback_code(code) or "task failed"
        return text[0].upper() + text[1:]

    def _plan(self, task: SimTask) -> list[Step]:
        failed = "GENERATE_AUDIO_FAILED"
        if task.error_code is not None:
            failed = str(task.options.get("status") or failed_status_for(task.error_code))
        name = task.scenario
        return plan(
            "normal" if name in CREATED_FAULTS else name,
            task.options,
            times=self.stage_times,
            failed_status=failed,
            upload_error=name == "upload_unreachable",
        )

    # ---------------------------------------------------------------------- lifecycle

    async def _run_lifecycle(self, task: SimTask, steps: list[Step], started: float) -> None:
        """Play ``steps`` on the scaled clock. First attempts are sent in order, one after
        the other, so the receiver sees the scripted order; retries run on their own."""
        for step in steps:
            delay = started + self._scaled(step.at) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._apply(task, step)
        task.finished = True

    async def _apply(self, task: SimTask, step: Step) -> None:
        if step.status is not None:
            self._set_status(task, step.status)
        if step.callback is not None:
            await self._deliver(task, step.callback)

    def _set_status(self, task: SimTask, status: str) -> None:
        """Move record-info to ``status``; publish the files the new stage hands out."""
        task.status = status
        stage = _STAGE_OF_STATUS.get(status)
        if stage is None:
            return  # an undocumented status: the data shown stays as it was
        task.stage = stage
        now = time.monotonic()
        if stage in ("first", "complete"):
            for track in task.tracks:
                if track.media_published_at is None:
                    track.media_published_at = now
                if track.audio_published_at is None and (stage == "complete" or track.index == 0):
                    track.audio_published_at = now
        if stage == "failed" and self._profile.name == "kie" and task.error_code == 531:
            self.credits += self.task_cost  # "generation failed, credits refunded"

    def _create_time_value(self, task: SimTask) -> str | int:
        """``createTime`` for the next message carrying ``task``'s tracks; ``alternate``
        switches form from one such message to the next, starting with epoch ms."""
        when = task.tracks[0].create_time
        if self.create_time == "alternate":
            self._create_time_flip = not self._create_time_flip
            return format_create_time(when, epoch_ms=self._create_time_flip)
        return format_create_time(when, epoch_ms=self.create_time == "epoch_ms")

    def _callback_headers(self, task: SimTask) -> dict[str, str]:
        """Signing headers per §6 (kie with a key, or the signature fault scenarios)."""
        mode = task.scenario
        if mode not in ("bad_signature", "stale_signature") and not (
            self._profile.signs_callbacks and self._hmac_key
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

    async def _deliver(self, task: SimTask, callback_type: str) -> None:
        """Send one callback now; on failure, schedule the documented retries."""
        has_tracks = callback_type in ("first", "complete")
        body = callback_body(
            task,
            callback_type,
            create_time=self._create_time_value(task) if has_tracks else "",
            include_source=self.include_source_fields,
            error_data=self.error_data,
        )
        if not await self._attempt(task, callback_type, body, 0):
            self._spawn(
                self._retry(task, callback_type, body),
                name=f"addvocals-sim-retry-{task.task_id}-{callback_type}",
            )

    async def _retry(self, task: SimTask, callback_type: str, body: dict[str, Any]) -> None:
        for attempt, delay in enumerate(self.retry_delays, start=1):
            await asyncio.sleep(self._scaled(delay))
            if await self._attempt(task, callback_type, body, attempt):
                return

    async def _attempt(
        self, task: SimTask, callback_type: str, body: dict[str, Any], attempt: int
    ) -> bool:
        """POST ``body`` to the task's callback URL once and record how it went."""
        assert self._session is not None
        headers = {"Content-Type": "application/json", **self._callback_headers(task)}
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
            if not self.allow_remote_callbacks and not _is_loopback(task.callback_url):
                delivery.error = "not sent: the callback host is not loopback"
            else:
                timeout = aiohttp.ClientTimeout(
                    total=max(self._scaled(self.callback_timeout), self.min_callback_timeout)
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
            self.deliveries.append(delivery)
        logger.debug(
            "callback %s for task %s attempt %d: %s",
            callback_type,
            task.task_id,
            attempt,
            delivery.status if delivery.error is None else delivery.error,
        )
        return delivery.ok

    # ------------------------------------------------------------------ details, files

    def _details(self, request: web.Request, rec: RecordedRequest) -> web.Response:
        dialect = self._dialect
        if not self._authorized(request):
            return self._answer(rec, 401, dialect.unauthorized_msg)
        task_id = request.query.get("taskId", "")
        if not task_id:
            return self._answer(rec, dialect.invalid, "taskId is required")
        rec.task_id = task_id
        task = self.tasks.get(task_id)
        if task is None:
            return self._answer(rec, 404, "Task not found")
        if self.details_rate_limit is not None:
            now = time.monotonic()
            recent = self._details_times.setdefault(task_id, collections.deque())
            while recent and recent[0] <= now - 1.0:
                recent.popleft()
            if len(recent) >= self.details_rate_limit:
                return self._answer(rec, dialect.rate_limited)
            recent.append(now)
        task.details_answered += 1
        if task.details_answered <= self.young_details_null:
            return self._answer(rec, 200, data=None)
        data = details_data(
            task,
            create_time=self._create_time_value(task)
            if task.stage in ("first", "complete")
            else "",
            include_source=self.include_source_fields,
            legacy=self.legacy_details,
            repeat_error=dialect.repeats_error_in_response,
        )
        return self._answer(rec, 200, data=data)

    def _serve_file(self, request: web.Request, path: str) -> web.Response:
        """Serve a track's MP3, stream or cover once handed out, until retention ends."""
        not_found = web.Response(status=404, text="Not Found")
        if request.method not in ("GET", "HEAD"):
            return not_found
        parts = path.split("/")
        if len(parts) != 4:
            return not_found
        task = self.tasks.get(parts[2])
        name = parts[3]
        if task is None:
            return not_found
        for track in task.tracks:
            if name == f"{track.id}.mp3":
                published, content_type = track.audio_published_at, "audio/mpeg"
            elif name == f"{track.id}-stream.mp3":
                published, content_type = track.media_published_at, "audio/mpeg"
            elif name == f"{track.id}.jpeg":
                published, content_type = track.media_published_at, "image/jpeg"
            else:
                continue
            retention = self._scaled(self.retention_days * _DAY)
            if published is None or time.monotonic() > published + retention:
                return not_found
            if content_type == "image/jpeg":
                payload = jpeg_bytes(track.gray)
            else:
                payload = mp3_bytes(track.id.encode(), track.frames)
            return web.Response(body=payload, content_type=content_type)
        return not_found


async def serve_forever(
    *,
    host: str = "127.0.0.1",
    port: int = 8181,
    api_key: str | None = None,
    provider: str = "apibox",
    speed: float = 60.0,
    scenario: str = "normal",
    seed: int | None = None,
    webhook_hmac_key: str | None = None,
    allow_remote_callbacks: bool = False,
    out: TextIO | None = None,
) -> None:
    """Run a simulator until cancelled, after printing one line with its base URL and key.

    At the default speed of 60 a task completes in about 3 s, so a person trying a client
    against it is not kept waiting. The key is printed because whoever starts a simulator
    needs it to talk to it, and a simulator key opens nothing else; when none is given, a
    random one is made up.
    """
    stream = out if out is not None else sys.stdout
    async with Simulator(
        provider=provider,
        api_key=api_key,
        host=host,
        port=port,
        speed=speed,
        scenario=scenario,
        seed=seed,
        webhook_hmac_key=webhook_hmac_key,
        allow_remote_callbacks=allow_remote_callbacks,
    ) as sim:
        print(
            f"Add Vocals simulator ({sim.provider}, speed {speed:g}x, scenario {scenario}) "
            f"listening on {sim.base_url} - api key: {sim.api_key}",
            file=stream,
            flush=True,
        )
        await asyncio.Event().wait()
