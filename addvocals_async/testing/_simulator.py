"""A stateful fake of the Add Vocals API that runs real task lifecycles and calls you back.

``Simulator`` is an aiohttp server on 127.0.0.1 that answers the submit, record-info and
credits endpoints the way a chosen provider does, creates tasks that move through their
stages on a scaled clock, POSTs the documented callbacks to each task's ``callBackUrl``
with the documented retry rules, and serves the audio and images it hands out. Scenarios
script the faults the real service shows (duplicates, reordering, lost callbacks,
failures, ambiguous submits), per task or by seeded probability, and every request and
delivery is recorded so a test can assert exactly what crossed the wire.

This module is the facade: construction, start and close, and the query API. The work is
done by ``_routes`` (HTTP), ``_lifecycle`` (scenario choice and the clock) and ``_sender``
(callbacks), which share one ``SimState`` instead of reaching back into ``Simulator``.

Time: every duration of the real API is divided by ``speed``. Rate limits are not scaled
unless asked (``scale_rate_limits=True``, as the pytest fixture does): they guard against
a client that hammers the API, which is a real-time property of the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Generic, Literal, TextIO, TypeVar, cast, overload

import yarl
from aiohttp import web

from .._providers import ProviderProfile, get_provider
from ._activity import report_activity
from ._lifecycle import Lifecycle
from ._records import Delivery, RecordedRequest, SimTask
from ._routes import ApiRoutes
from ._scenarios import StageTimes
from ._sender import CallbackSender
from ._state import Background, SimState, logger
from ._uploads import UploadedRecord, UploadHost
from ._wire import CreateTimeMode

__all__ = ["Simulator", "serve_forever", "serve_until"]

_T = TypeVar("_T")


class _Shared(Generic[_T]):
    """A ``Simulator`` attribute that lives on its ``SimState``, so that setting it on the
    simulator (``sim.credits = 0``) changes what the routes, lifecycle and sender see."""

    def __set_name__(self, owner: type[Simulator], name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type[Simulator]) -> _Shared[_T]: ...

    @overload
    def __get__(self, obj: Simulator, owner: type[Simulator]) -> _T: ...

    def __get__(self, obj: Simulator | None, owner: type[Simulator]) -> _T | _Shared[_T]:
        if obj is None:
            return self
        return cast(_T, getattr(obj._state, self._name))

    def __set__(self, obj: Simulator, value: _T) -> None:
        setattr(obj._state, self._name, value)


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
    - ``webhook_hmac_key``: kie signs callbacks with it (``X-Webhook-Signature``); other
      providers sign nothing.
    - ``credits``, ``task_cost``: the balance, and what each created task takes from it.
    - ``rate_limit``: ``(creates, seconds)`` per sliding window (``None`` to disable);
      ``details_rate_limit``: record-info requests per task per second. Neither is scaled
      by default: they measure how hard a client hits the API, in real time.
      ``scale_rate_limits=True`` divides both windows by ``speed`` too, for a client whose
      own timings are scaled alike (the testing switch at ``time_scale=1/speed``, as the
      ``addvocals_simulator`` pytest fixture sets it).
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
    - ``fetch_upload_url``: fetch each submit's ``uploadUrl`` when it is on loopback (a
      receiver's ``serve_file``, a file uploaded here), as the real API fetches it, and
      fail the task the provider's way when that fails (kie: the submit answers 451;
      apibox, sunoapi: an error callback 451). Other hosts are never fetched. On by
      default; ``SimTask.input_size``/``input_error`` say what the fetch found.

    sunoapi and kie also get the upload host's three routes (API-SPEC §7) on the same
    port; ``uploads`` holds what was uploaded, ``fail_uploads(code)`` queues failures.

    The other keywords are attributes of the same name (``scenario`` as
    ``default_scenario``) that can be changed at any time and take effect on the next
    request or callback: set ``maintenance = True`` to make every API call answer 455, or
    change ``credits``, ``default_scenario`` and ``mix``. The API key and the webhook HMAC
    key never appear in a repr or a log line.
    """

    speed: _Shared[float] = _Shared()
    credits: _Shared[int] = _Shared()
    task_cost: _Shared[int] = _Shared()
    rate_limit: _Shared[tuple[int, float] | None] = _Shared()
    details_rate_limit: _Shared[int | None] = _Shared()
    callback_timeout: _Shared[float] = _Shared()
    min_callback_timeout: _Shared[float] = _Shared()
    retry_delays: _Shared[tuple[float, ...]] = _Shared()
    stage_times: _Shared[StageTimes] = _Shared()
    create_time: _Shared[CreateTimeMode] = _Shared()
    error_data: _Shared[Literal["null", "empty_list"]] = _Shared()
    error_status: _Shared[Literal["ok", "mirror"]] = _Shared()
    legacy_details: _Shared[bool] = _Shared()
    scale_rate_limits: _Shared[bool] = _Shared()
    young_details_null: _Shared[int] = _Shared()
    retention_days: _Shared[float] = _Shared()
    include_source_fields: _Shared[bool] = _Shared()
    hang_seconds: _Shared[float] = _Shared()
    allow_remote_callbacks: _Shared[bool] = _Shared()
    maintenance: _Shared[bool] = _Shared()
    fetch_upload_url: _Shared[bool] = _Shared()
    requests: _Shared[list[RecordedRequest]] = _Shared()
    """Every request received, in arrival order."""
    deliveries: _Shared[list[Delivery]] = _Shared()
    """Every callback attempt, in sending order."""
    tasks: _Shared[dict[str, SimTask]] = _Shared()
    """Every task created, by task id."""

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
        fetch_upload_url: bool = True,
        scale_rate_limits: bool = False,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if create_time not in ("string", "epoch_ms", "alternate"):
            raise ValueError("create_time must be 'string', 'epoch_ms' or 'alternate'")
        if error_data not in ("null", "empty_list"):
            raise ValueError("error_data must be 'null' or 'empty_list'")
        if error_status not in ("ok", "mirror"):
            raise ValueError("error_status must be 'ok' or 'mirror'")
        profile = get_provider(provider)
        self._api_key = api_key if api_key is not None else f"sim-{secrets.token_hex(12)}"
        if isinstance(webhook_hmac_key, str):
            webhook_hmac_key = webhook_hmac_key.encode()
        self._host = host
        self._port = port
        if include_source_fields is None:
            include_source_fields = profile.name != "kie"
        self._state = SimState(
            profile=profile,
            speed=float(speed),
            credits=credits,
            task_cost=task_cost,
            rate_limit=rate_limit,
            details_rate_limit=details_rate_limit,
            callback_timeout=callback_timeout,
            min_callback_timeout=min_callback_timeout,
            retry_delays=tuple(retry_delays),
            stage_times=stage_times or StageTimes(),
            create_time=create_time,
            error_data=error_data,
            error_status=error_status,
            legacy_details=legacy_details,
            young_details_null=young_details_null,
            retention_days=retention_days,
            include_source_fields=include_source_fields,
            hang_seconds=hang_seconds,
            allow_remote_callbacks=allow_remote_callbacks,
            fetch_upload_url=fetch_upload_url,
            scale_rate_limits=scale_rate_limits,
        )
        self._background = Background()
        self._sender = CallbackSender(self._state, self._background, hmac_key=webhook_hmac_key)
        self._lifecycle = Lifecycle(
            self._state,
            self._background,
            self._sender,
            seed=seed,
            scenario=scenario,
            mix=mix or {},
        )
        self._uploads = UploadHost(self._state)
        self._routes = ApiRoutes(
            self._state, self._background, self._lifecycle, self._uploads, api_key=self._api_key
        )
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ public surface

    @property
    def provider(self) -> str:
        """The provider profile's name: ``"apibox"``, ``"sunoapi"`` or ``"kie"``."""
        return self._state.profile.name

    @property
    def profile(self) -> ProviderProfile:
        """The provider profile in use (paths, code tables, models)."""
        return self._state.profile

    @property
    def api_key(self) -> str:
        """The Bearer key the simulated API accepts."""
        return self._api_key

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, the root the API paths hang from."""
        if self._state.base_url is None:
            raise RuntimeError("the simulator is not running; use 'async with Simulator()'")
        return str(self._state.base_url)

    @property
    def submit_url(self) -> str:
        """Where to POST a submit."""
        return str(self._url(self.profile.submit_path))

    @property
    def credits_url(self) -> str:
        """The provider's credits endpoint (kie's path differs)."""
        return str(self._url(self.profile.credits_path))

    def details_url(self, task_id: str) -> str:
        """record-info for ``task_id``."""
        return str(self._url(self.profile.details_path).with_query(taskId=task_id))

    @property
    def default_scenario(self) -> str:
        """The scenario of tasks that no ``script()`` entry and no ``mix`` choice claims."""
        return self._lifecycle.default_scenario

    @default_scenario.setter
    def default_scenario(self, name: str) -> None:
        self._lifecycle.default_scenario = name

    @property
    def mix(self) -> Mapping[str, float]:
        """Probabilities of scenarios for unscripted submits; the remainder (when they sum
        to less than 1) goes to ``default_scenario``. Sums above 1 are normalised."""
        return self._lifecycle.mix

    @mix.setter
    def mix(self, weights: Mapping[str, float]) -> None:
        self._lifecycle.mix = weights

    def script(self, scenario: str, count: int = 1, **options: Any) -> None:
        """Make the next ``count`` submits follow ``scenario`` (first in, first out), then
        fall back to the default.

        A scenario that rejects the submit (``rate_limited``, ``maintenance``, and
        ``upload_unreachable`` on kie) spends its turn on ``times`` rejected submits
        (default 1); the submit after them takes the next entry or the default.
        """
        self._lifecycle.script(scenario, count, options)

    async def start(self) -> None:
        """Bind the server and open the callback sender."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        if self._background.closed:
            raise RuntimeError("a closed simulator cannot be restarted")
        self._sender.open()
        self._uploads.open()
        app = self._routes.application()
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
        self._state.base_url = yarl.URL.build(scheme="http", host=self._host, port=port)
        logger.debug("simulator (%s) listening on %s", self.provider, self._state.base_url)

    async def close(self) -> None:
        """Stop every lifecycle and delivery, answer hanging submits, and shut down."""
        if self._background.closed:
            return
        await self._background.cancel_all()
        if self._runner is not None:
            await self._runner.cleanup()
        await self._sender.close()
        await self._uploads.close()

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
            pending = self._background.pending()
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
        return [r for r in self.requests if r.path == self._state.profile.submit_path]

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

    @property
    def uploads(self) -> dict[str, UploadedRecord]:
        """Every file uploaded to the simulated upload host, by ``fileId``."""
        return self._uploads.files

    def fail_uploads(self, code: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` upload requests with ``code`` (400, 401, 405, 500)."""
        self._uploads.faults.extend([code] * times)

    def __repr__(self) -> str:
        base_url = self._state.base_url
        where = str(base_url) if base_url is not None else "not started"
        return (
            f"<Simulator provider={self.provider!r} at {where} speed={self.speed:g} "
            f"tasks={len(self.tasks)} api_key=<hidden>>"
        )

    def _url(self, path: str) -> yarl.URL:
        return yarl.URL(self.base_url).with_path(path)


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
    await serve_until(
        asyncio.Event(),
        host=host,
        port=port,
        api_key=api_key,
        provider=provider,
        speed=speed,
        scenario=scenario,
        seed=seed,
        webhook_hmac_key=webhook_hmac_key,
        allow_remote_callbacks=allow_remote_callbacks,
        out=out,
    )


async def serve_until(
    stop: asyncio.Event,
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
    activity: TextIO | None = None,
) -> None:
    """``serve_forever`` that also ends, closing the simulator, once ``stop`` is set: a
    signal handler sets it, so the simulator shuts down cleanly instead of dying.
    ``activity``: where to write a line per request and per callback attempt (none: quiet)."""
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
        if activity is None:
            await stop.wait()
            return
        reporter = asyncio.create_task(report_activity(sim.requests, sim.deliveries, activity))
        try:
            await stop.wait()
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
