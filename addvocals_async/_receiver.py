"""The callback receiver: the HTTP edge between the API's callbacks and the delivery seam.

One ``CallbackReceiver`` serves three ways:

- embedded: ``async with CallbackReceiver(host=..., port=0, public_url=...)`` runs its own
  aiohttp ``AppRunner`` + ``TCPSite``; the bind address and the advertised URL are separate,
  for proxies and tunnels;
- mounted: ``addvocals_async.aiohttp.init_app(app, receiver)`` adds its route to your
  aiohttp app;
- anywhere else: ``await receiver.handle(path, headers, body)`` returns a status and a JSON
  body for any web framework to send back.

It also serves local files for the API to fetch (``serve_file``, ``GET``/``HEAD``
``{path}/files/{token}``, embedded and mounted; see ``_serving``).

A request is checked in order of cost: the URL token (constant time, no lookup), the body
size, the JSON, the kie signature when a key is set, the shape. Only then is it published
on the delivery seam, which checks that the URL belongs to the task the body names and
hands it to whoever awaits that task, in this process or another. The handler does no
network I/O of its own and runs no user code inline: ``on_event`` hooks run as tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import attrs
import yarl
from aiohttp.http_exceptions import HttpProcessingError

try:  # what aiohttp.web exports, from where the client side already imported it
    from aiohttp.helpers import AppKey
except ImportError:  # pragma: no cover - an aiohttp that keeps it elsewhere
    from aiohttp.web import AppKey

from ._config import SECRET_ENV, WEBHOOK_KEY_ENV
from ._convert import NOT_JSON, CallbackParseError, WireFormat, parse_json, wire
from ._delivery import (
    Delivery,
    DeliveryBackend,
    DeliveryResult,
    InMemoryBackend,
)
from ._errors import DeliveryUnavailableError, ReceiverClosedError, WebhookVerificationError
from ._models import CallbackEvent, Stage
from ._serving import DEFAULT_SERVE_SECONDS, FileServer
from ._signing import DEFAULT_TOLERANCE, Secret, TokenSigner, as_secret, verify_signature
from ._validation import require_url

if TYPE_CHECKING:
    # aiohttp's server side (aiohttp.web and its argument parser, its router, its file
    # responses) is imported when a receiver starts or is mounted, not with the package:
    # a client that only submits and polls never pays for it.
    from aiohttp import web
    from aiohttp.abc import AbstractStreamWriter
    from aiohttp.http_parser import RawRequestMessage
    from aiohttp.streams import StreamReader
    from aiohttp.web_protocol import RequestHandler

    from ._guard import ConnectionGuard

__all__ = [
    "RECEIVER_KEY",
    "CallbackReceiver",
    "CallbackURL",
    "EventHook",
    "Reachability",
    "ReceiverResponse",
    "ReceiverStats",
]

log = logging.getLogger("addvocals_async.receiver")

DEFAULT_MAX_BODY = 1024 * 1024

EventHook = Callable[[CallbackEvent], "Awaitable[None] | None"]
"""``on_event(event)`` / ``on_unclaimed(event)``: a plain or async function, run as a task."""


@attrs.define
class ReceiverStats:
    """Counters of what the receiver did, for metrics and tests."""

    accepted: int = 0
    ignored: int = 0
    orphaned: int = 0
    rejected_token: int = 0
    rejected_size: int = 0
    rejected_body: int = 0
    rejected_signature: int = 0
    rejected_mismatch: int = 0
    unavailable: int = 0  # answered 503: the delivery seam could not store them
    disconnected: int = 0  # the sender went away before its body arrived
    hook_errors: int = 0
    files_served: int = 0  # served-file requests answered 200 or 206
    files_refused: int = 0  # served-file requests with a forged, expired or revoked token

    @property
    def rejected(self) -> int:
        return (
            self.rejected_token
            + self.rejected_size
            + self.rejected_body
            + self.rejected_signature
            + self.rejected_mismatch
        )


@attrs.frozen
class ReceiverResponse:
    """What to answer a callback request: an HTTP status and a JSON body."""

    status: int
    body: Mapping[str, str]

    def json(self) -> str:
        return json.dumps(self.body)


@attrs.frozen
class Reachability:
    """What ``check_reachable()`` found: whether a probe sent to the public URL arrived
    here, after how many ``seconds``, and in ``detail`` what to do when it did not."""

    reachable: bool
    url: str
    seconds: float | None
    detail: str


@attrs.frozen
class CallbackURL:
    """A fresh callback URL for one submit: ``url`` is sent to the API, ``ref`` names it
    on the delivery seam (the URL's token is ``ref`` plus its HMAC)."""

    ref: str
    url: str


class RejectionLog:
    """Rejections logged without letting a flood write a line per request: the first of
    each kind in a window is logged at once, the rest are counted and summed up in one
    line when the window has passed (or the receiver closes). Text from outside (task
    ids, parse errors) is logged ``ascii()``-escaped, so it cannot forge log lines."""

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self._counts: dict[str, int] = {}
        self._since: dict[str, float] = {}

    def refused(self, kind: str, detail: str = "") -> None:
        now = time.monotonic()
        since = self._since.get(kind)
        if since is None or now - since >= self.window:
            self._summarize(kind)
            self._since[kind] = now
            log.warning("refused a callback: %s%s", kind, f" ({detail})" if detail else "")
        else:
            self._counts[kind] = self._counts.get(kind, 0) + 1

    def _summarize(self, kind: str) -> None:
        count = self._counts.pop(kind, 0)
        if count:
            log.warning(
                "refused %d more callbacks (%s) in the last %.0f s", count, kind, self.window
            )

    def flush(self) -> None:
        for kind in list(self._counts):
            self._summarize(kind)


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log, for the embedded receiver: a malformed request (a header too
    long, a bad Content-Length: the sender's fault, answered 400) is a rejection summed
    up like the others, not an ERROR with a traceback per request. Anything else goes to
    the receiver's logger as it is."""

    def __init__(self, rejections: RejectionLog) -> None:
        super().__init__(log, {})
        self._rejections = rejections

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError) and (exc.code or 500) < 500:
            self._rejections.refused("malformed HTTP request", outside(exc.message, 200))
            return
        super().log(level, msg, *args, **kwargs)


def outside(text: object, limit: int = 80) -> str:
    """Text that came from outside, safe to log: cut, newlines and surrogates escaped."""
    return ascii(str(text)[:limit])


_RECEIVED = ReceiverResponse(200, {"status": "received"})
_RECEIVED_JSON = _RECEIVED.json().encode()
_JSON_HEADERS = {"Content-Type": "application/json"}  # as is: no content_type parsing


def _reject(status: int, reason: str) -> ReceiverResponse:
    return ReceiverResponse(status, {"status": "rejected", "reason": reason})


_FORBIDDEN = _reject(403, "invalid callback token")
_INPUT_FETCHED = frozenset({Stage.FIRST, Stage.COMPLETE, Stage.FAILED})
"""Stages by which the API has fetched a task's input: its served file is no longer needed."""
_UNAVAILABLE = _reject(503, "callback storage unavailable, retry later")
_PROBE_RECEIVED = ReceiverResponse(200, {"status": "probe received"})
_NOT_FOUND = _reject(404, "not a callback path")


def _continue_expected(request: web.BaseRequest) -> bool:
    """The sender waits for "100 Continue" before sending the body (rare)."""
    expect = request.headers.get("Expect")
    return expect is not None and expect.lower() == "100-continue" and request.version >= (1, 1)


class CallbackReceiver:
    """Receives the API's callbacks and resolves the matching tasks' waits.

    ``secret`` (or ``ADDVOCALS_RECEIVER_SECRET``) keys the callback URL tokens; set it so
    that callbacks survive a restart, or reach another process with the same secret. Left
    out, a random one is made and a warning says so. ``webhook_hmac_key`` (or
    ``ADDVOCALS_WEBHOOK_HMAC_KEY``) turns on kie's signature check, with ``tolerance``
    seconds either way. Bodies over ``max_body_size`` bytes are refused with 413.
    ``on_event`` is called with every accepted event, as a task of its own;
    ``on_unclaimed`` with every genuine callback for a task nobody here is waiting for
    (submitted by another process with the same secret, or before a restart).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
        path: str = "/addvocals",
        secret: str | bytes | Secret | None = None,
        webhook_hmac_key: str | bytes | Secret | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        max_body_size: int = DEFAULT_MAX_BODY,
        backend: DeliveryBackend | None = None,
        on_event: EventHook | None = None,
        on_unclaimed: EventHook | None = None,
        wire_format: WireFormat | None = None,
        shutdown_timeout: float = 5.0,
        receive_timeout: float = 10.0,
        max_connections: int | None = None,
        keepalive_timeout: float = 15.0,
    ) -> None:
        if public_url is not None:
            require_url("public_url", public_url)
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        self.host = host
        self.port = port
        self.public_url = public_url
        self.path = path.rstrip("/")
        given = as_secret(secret, SECRET_ENV)
        if given is None:
            log.warning(
                "no receiver secret set: using a random one, so callbacks for tasks submitted "
                "before a restart will be refused (polling still finds their results). Set %s "
                "or pass secret= to keep them.",
                SECRET_ENV,
            )
            given = Secret(secrets.token_bytes(32))
        self._signer = TokenSigner(given)
        self._secret = given
        self._webhook_key = as_secret(webhook_hmac_key, WEBHOOK_KEY_ENV)
        self.tolerance = tolerance
        self.max_body_size = max_body_size
        self.backend: DeliveryBackend = backend if backend is not None else InMemoryBackend()
        """The delivery seam callbacks are published on."""
        self._publish_now: Callable[[Delivery], DeliveryResult] | None = (
            # Exactly the default: a subclass may override publish.
            self.backend.publish_now if type(self.backend) is InMemoryBackend else None
        )
        self.on_event = on_event
        self.on_unclaimed = on_unclaimed
        self.stats = ReceiverStats()
        self._wire = wire_format or wire
        self._shutdown_timeout = shutdown_timeout
        for name, value in (
            ("receive_timeout", receive_timeout),
            ("keepalive_timeout", keepalive_timeout),
        ):
            if not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections!r}")
        self.keepalive_timeout = keepalive_timeout
        self._guard: ConnectionGuard | None = None
        self._callback_prefix = f"{self.path}/cb/"
        self._guard_settings = (max_connections, receive_timeout)  # None: the default
        self._runner: web.BaseRunner | None = None
        self._base_request: Callable[..., web.BaseRequest] = _not_serving
        self._response: Callable[..., web.Response] = _not_serving
        self._bound_url: yarl.URL | None = None
        self._callback_base: tuple[str, str] | None = None
        self._hooks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._in_flight = 0  # callback requests being received or handled right now
        self._seam_down = False
        self._rejections = RejectionLog()
        # A download that takes nothing for receive_timeout lets go of its connection.
        self._files = FileServer(
            self._secret, self._rejections.refused, stall_timeout=receive_timeout
        )
        self._files_prefix = f"{self.path}/files/"
        self._mounted = False  # mount() adds the served-file route to an application
        self._probes: dict[str, asyncio.Future[float]] = {}
        self._drained: asyncio.Event | None = None

    def __repr__(self) -> str:
        where = self.public_url or (str(self._bound_url) if self._bound_url else "not started")
        return f"CallbackReceiver(url={where!r}, secret=***)"

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> CallbackReceiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Serve on ``host``:``port`` (0 picks a free port)."""
        if self._runner is not None:
            return
        if self._closed:
            raise RuntimeError("this receiver was closed; create a new one")
        await self.backend.connect()  # a store out of reach fails here, clearly
        from aiohttp import web

        from ._guard import ConnectionGuard, GuardedServer, GuardedSite, default_max_connections

        self._load_web()
        max_connections, receive_timeout = self._guard_settings
        if max_connections is None:
            max_connections = default_max_connections()
        self._guard = ConnectionGuard(
            max_connections=max_connections, receive_timeout=receive_timeout
        )
        # aiohttp's low-level server: one route needs no router, and the guard hears of
        # every connection it opens and closes.
        server = GuardedServer(
            self._aiohttp_handler,
            self._guard,
            hold=self.max_body_size,
            on_abandoned=self._abandoned,
            request_factory=self._make_request,
            access_log=None,
            # Also how long a new connection may go without a whole request's headers.
            keepalive_timeout=self.keepalive_timeout,
            logger=ServerLog(self._rejections),
        )
        runner = web.ServerRunner(server, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        site = GuardedSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        if bound_host in ("0.0.0.0", "::"):
            bound_host = "127.0.0.1"
            if self.public_url is None:
                log.warning(
                    "the receiver listens on all interfaces but has no public_url: the API "
                    "will be told to call 127.0.0.1, which only works on this machine"
                )
        self._bound_url = yarl.URL.build(
            scheme="http", host=bound_host, port=bound_port, path=self.path
        )

    def _abandoned(self) -> None:
        """A request was cut mid-body before it reached a handler (the sender went away,
        or the guard closed it as too slow)."""
        self.stats.disconnected += 1

    async def aclose(self) -> None:
        """Stop accepting callbacks. In-flight requests finish; waiting tasks fall back
        to polling, or get ``ReceiverClosedError`` when their client is closed too."""
        if self._closed:
            return
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None:
            # Stop accepting, then let callbacks already arriving finish: aiohttp's own
            # shutdown drops the rest of a body still on its way, and the sender would
            # only retry minutes later.
            for site in list(runner.sites):
                await site.stop()
            from ._guard import GuardedServer

            server = runner.server
            if isinstance(server, GuardedServer):
                # One shutdown_timeout for the whole: the wait for callbacks in flight
                # below, then aiohttp's for its handlers (it took each in turn, twice).
                server.shutdown_deadline = (
                    asyncio.get_running_loop().time() + self._shutdown_timeout
                )
                arriving = server.release_arriving()
                for _ in range(20):  # a few loop turns: their handlers start, in flight
                    if self._in_flight >= arriving:
                        break
                    await asyncio.sleep(0)
            await self._drain()
            await runner.cleanup()
        if self._guard is not None:
            self._guard.close()
        await self.backend.aclose()
        self._rejections.flush()
        if self._hooks:
            await asyncio.wait(self._hooks, timeout=self._shutdown_timeout)
            for task in self._hooks:
                task.cancel()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def url(self) -> str:
        """The base URL callbacks are sent to: ``public_url`` if given, else the bound address."""
        if self.public_url is not None:
            return self.public_url
        if self._bound_url is None:
            raise RuntimeError(
                "the receiver has no URL yet: give it public_url= (the URL the API reaches; "
                "required when your own web framework routes the callbacks, e.g. FastAPI or "
                "aiohttp, where you don't start it), or start it to serve on its own "
                "(async with CallbackReceiver(...))"
            )
        return str(self._bound_url)

    # ---------------------------------------------------------------- mounting

    def mount(
        self, app: web.Application, *, path: str | None = None, close_with_app: bool = True
    ) -> None:
        """Add the callback route (``POST {path}/cb/{token}``) and the served-file route
        (``GET``/``HEAD {path}/files/{token}``) to an aiohttp application and store this
        receiver as ``app[RECEIVER_KEY]``; the receiver closes with the app.
        ``addvocals_async.aiohttp.init_app(app, receiver)`` says the same."""
        self._load_web()
        prefix = (path if path is not None else self.path).rstrip("/")
        app.router.add_post(f"{prefix}/cb/{{token}}", self._mounted_handler)
        app.router.add_get(f"{prefix}/files/{{token}}", self._mounted_file_handler)
        self._mounted = True
        app[RECEIVER_KEY] = self
        if close_with_app:

            async def _close(_: web.Application) -> None:
                await self.aclose()

            app.on_cleanup.append(_close)

    async def _drain(self) -> None:
        """Wait (up to ``shutdown_timeout``) until no callback request is in flight."""
        if self._in_flight:
            self._drained = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained.wait(), self._shutdown_timeout)

    def _load_web(self) -> None:
        """What the aiohttp handlers use, imported when the receiver starts or is mounted."""
        from aiohttp import web

        self._base_request = web.BaseRequest
        self._response = web.Response

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        return self._base_request(
            message,
            payload,
            protocol,
            writer,
            task,
            asyncio.get_running_loop(),
            client_max_size=self.max_body_size + 1,
        )

    async def _aiohttp_handler(self, request: web.BaseRequest) -> web.StreamResponse:
        """The whole of the embedded server (aiohttp's low-level server: two routes,
        ``POST {path}/cb/{token}`` and ``GET``/``HEAD {path}/files/{token}``, need no
        router)."""
        path = request.path
        if path.startswith(self._files_prefix):
            return await self._file_handler(request, path[len(self._files_prefix) :])
        prefix = self._callback_prefix
        token = path[len(prefix) :]
        if request.method != "POST" or not path.startswith(prefix) or "/" in token:
            return self._json_response(_NOT_FOUND)
        return await self._serve(request, token, expect=True)

    async def _mounted_handler(self, request: web.Request) -> web.StreamResponse:
        """``POST {path}/cb/{token}`` in an application it is mounted in."""
        return await self._serve(request, request.match_info["token"])

    def _json_response(self, response: ReceiverResponse) -> web.Response:
        return self._response(
            text=response.json(), status=response.status, content_type="application/json"
        )

    async def _serve(
        self, request: web.BaseRequest, token: str, *, expect: bool = False
    ) -> web.StreamResponse:
        """A callback request's token checked, body read, checked and published.
        ``expect``: answer ``Expect: 100-continue`` here (the embedded server has no
        router to do it), once the token and length are accepted: a request refused
        (403, 413) is answered at once, and its sender never sends the body."""
        self._in_flight += 1  # counted so that aclose() lets it finish
        guard = self._guard
        transport = request.transport
        try:
            ref = self._ref_for(token)  # before reading a single byte
            length = request.content_length
            if ref is None:
                response = _FORBIDDEN
            elif self._probes and ref in self._probes:
                response = self._probe_arrived(ref)
            elif length is not None and length > self.max_body_size:
                response = self._too_large()
            else:
                if expect and _continue_expected(request):
                    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if guard is not None:
                    content = request.content  # what aiohttp's parser has of the body
                    guard.request_started(
                        transport,
                        0
                        if content.is_eof()
                        else -1
                        if length is None
                        else max(0, length - content.total_bytes),
                    )
                if length is not None:
                    body = await request.read()
                else:  # chunked: count as it arrives
                    chunks = bytearray()
                    async for chunk in request.content.iter_chunked(65536):
                        chunks += chunk
                        if len(chunks) > self.max_body_size:
                            break
                    body = bytes(chunks)
                if guard is not None:
                    guard.request_received(transport)
                checked = (
                    self._too_large()
                    if len(body) > self.max_body_size
                    else self._check_body(ref, request.headers, body)
                )
                publish_now = self._publish_now
                if isinstance(checked, ReceiverResponse):
                    response = checked
                elif publish_now is not None:  # the in-memory seam: the common, fast path
                    response = self._answer(publish_now(checked), checked)
                else:
                    response = await self._publish(checked)
        except (ConnectionError, RuntimeError) as exc:
            # The sender went away mid-body, or its receive deadline closed the connection:
            # nobody is left to answer, and nothing to log but a count. (aiohttp raises
            # RuntimeError when the connection was gone before the body was read.)
            if isinstance(exc, RuntimeError) and request.transport is not None:
                raise
            self.stats.disconnected += 1
            return self._response(status=400)
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._drained is not None:
                self._drained.set()
            if guard is not None:
                guard.response_made(transport)
        if response is _RECEIVED:
            return self._response(body=_RECEIVED_JSON, headers=_JSON_HEADERS)
        return self._json_response(response)

    # ---------------------------------------------------------------- served files

    def serve_file(
        self,
        path: str | os.PathLike[str],
        *,
        expires_in: float = DEFAULT_SERVE_SECONDS,
        task_ref: str | None = None,
        max_bytes: int | None = None,
    ) -> str:
        """Serve a local audio file for the API to fetch; returns its URL, to pass as
        ``upload_url``: ``{url}/files/{token}``, unguessable, under the receiver's public URL.

        The file is checked first (exists, regular, at most ``max_bytes``, looks like
        audio: ``LocalFileError`` otherwise) and served with ``GET``/``HEAD`` and byte
        ranges until ``expires_in`` seconds have passed, or until the task whose callback
        reference is ``task_ref`` reports ``first``, ``complete`` or a failure
        (``add_vocals(audio=Path(...))`` sets it). Only this file is served under the
        token, and only by this receiver: the table lives in this process, so the receiver
        must be started or mounted (``ReceiverClosedError`` otherwise).
        """
        if self._closed:
            raise RuntimeError("the receiver is closed")
        if self._runner is None and not self._mounted:
            # Its files are served only by this process: a receiver that is neither
            # started nor mounted (a worker minting URLs of a receiver tier elsewhere)
            # would hand out a URL whose fetch gets 403, and the task would fail.
            raise ReceiverClosedError(
                "the receiver serves no files here: start it (async with receiver) or mount "
                "it in your aiohttp application first; the receiver that serves a file must "
                "be the one that registered it (another process, a receiver tier behind "
                "Redis, does not have it): use client.upload or an upload_url instead"
            )
        base = yarl.URL(self.url)  # no URL yet (not started, no public_url): nothing registered
        token = self._files.register(
            path, expires_in=expires_in, task_ref=task_ref, max_bytes=max_bytes
        )
        return str(base / "files" / token)

    def stop_serving(self, url: str) -> bool:
        """Stop serving the file of a ``serve_file`` URL; False when it was not served."""
        return self._files.revoke(url.rstrip("/").rpartition("/")[2])

    @property
    def serving(self) -> int:
        """How many files ``serve_file`` registered are still served."""
        return len(self._files)

    async def _mounted_file_handler(self, request: web.Request) -> web.StreamResponse:
        return await self._file_handler(request, request.match_info["token"])

    async def _file_handler(self, request: web.BaseRequest, token: str) -> web.StreamResponse:
        guard, transport = self._guard, request.transport
        if guard is not None:
            guard.request_received(transport)  # a GET has no body: the request is here
        try:
            response = await self._files.respond(request, token)
            if response.status in (200, 206):
                self.stats.files_served += 1
            elif response.status == 403:
                self.stats.files_refused += 1
            return response
        except ConnectionError:
            self.stats.disconnected += 1
            return self._response(status=400)
        finally:
            if guard is not None:
                guard.response_made(transport)

    # ---------------------------------------------------------------- callback URLs

    def new_callback_url(self) -> CallbackURL:
        """A fresh, unguessable callback URL for one submit. Stateless: any receiver with
        the same secret accepts it, and the seam routes what arrives through it."""
        if self._closed:
            raise RuntimeError("the receiver is closed")
        ref, token = self._signer.new_token()
        url = self.url
        joined = self._callback_base
        if joined is None or joined[0] is not url:  # joined once per URL, not per submit
            joined = self._callback_base = (url, str(yarl.URL(url) / "cb"))
        base = joined[1]
        # A token is URL-safe (base64url and a dot): appended as yarl would.
        return CallbackURL(ref=ref, url=f"{base}/{token}")

    # ---------------------------------------------------------------- self-test

    async def check_reachable(self, *, timeout: float = 10.0) -> Reachability:
        """Send a probe through ``public_url`` to this receiver and report whether, and
        how fast, it arrived. Run it where the API would see you from: the probe goes out
        through this machine's network, so a tunnel or proxy that the API reaches is
        tested too, but a firewall letting only the API's addresses in is not.

        The probe uses a fresh, genuine callback URL; nothing is published.
        """
        fresh = self.new_callback_url()
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[float] = loop.create_future()
        self._probes[fresh.ref] = arrived
        started = loop.time()
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
                session.post(fresh.url, json={"addvocals_probe": True}) as answer,
            ):
                status = answer.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            reason = "no answer in time" if isinstance(exc, asyncio.TimeoutError) else str(exc)
            return Reachability(
                False,
                self.url,
                None,
                f"the probe to {self.url} failed ({reason}): the API cannot reach this "
                "receiver there either; check public_url, the proxy or the tunnel",
            )
        finally:
            self._probes.pop(fresh.ref, None)
        if arrived.done():
            took = arrived.result() - started
            return Reachability(True, self.url, took, f"the probe arrived in {took * 1000:.0f} ms")
        return Reachability(
            False,
            self.url,
            None,
            f"{self.url} answered HTTP {status}, but the probe never reached this receiver: "
            f"public_url points at another server, or a proxy does not forward "
            f"{yarl.URL(self.url).path}/cb/ here",
        )

    def _probe_arrived(self, ref: str) -> ReceiverResponse:
        probe = self._probes.get(ref)
        if probe is not None and not probe.done():
            probe.set_result(asyncio.get_running_loop().time())
        return _PROBE_RECEIVED

    # ---------------------------------------------------------------- handling

    async def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> ReceiverResponse:
        """Handle one callback request from any web framework: ``path`` is the request
        path (ending in ``/cb/<token>``), ``headers`` its headers, ``body`` the raw bytes."""
        head, _, token = path.rstrip("/").rpartition("/")
        if not head.endswith("/cb"):
            self.stats.rejected_token += 1
            return _NOT_FOUND
        return await self.handle_token(token, headers, body)

    async def handle_token(
        self, token: str, headers: Mapping[str, str], body: bytes
    ) -> ReceiverResponse:
        """``handle`` for a token already taken from the path."""
        ref = self._ref_for(token)
        if ref is None:
            return _FORBIDDEN
        if self._probes and ref in self._probes:
            return self._probe_arrived(ref)
        if len(body) > self.max_body_size:
            return self._too_large()
        return await self._handle_body(ref, headers, body)

    def _ref_for(self, token: str) -> str | None:
        ref = self._signer.check(token)
        if ref is None:
            self.stats.rejected_token += 1
            self._rejections.refused(
                "invalid URL token",
                "forged, or signed with another secret: every process must share the same "
                "ADDVOCALS_RECEIVER_SECRET",
            )
        return ref

    async def _handle_body(
        self, ref: str, headers: Mapping[str, str], body: bytes
    ) -> ReceiverResponse:
        checked = self._check_body(ref, headers, body)
        if isinstance(checked, ReceiverResponse):
            return checked
        publish_now = self._publish_now
        if publish_now is not None:  # the in-memory seam: no coroutine on the hot path
            return self._answer(publish_now(checked), checked)
        return await self._publish(checked)

    async def _publish(self, delivery: Delivery) -> ReceiverResponse:
        try:
            outcome = await self.backend.publish(delivery)
        except DeliveryUnavailableError as exc:
            # Not stored: the sender must try again (it does, 1, 5 and 15 minutes on).
            self.stats.unavailable += 1
            self._log_unavailable(exc)
            return _UNAVAILABLE
        except Exception as exc:  # a backend's own failure: still a retry, never a 500
            self.stats.unavailable += 1
            self._log_unavailable(exc)
            return _UNAVAILABLE
        if self._seam_down:
            self._seam_down = False
            log.warning("the delivery seam is back: callbacks are stored again")
        return self._answer(outcome, delivery)

    def _log_unavailable(self, exc: Exception) -> None:
        if not self._seam_down:  # once per outage, not once per callback
            self._seam_down = True
            log.error(
                "the delivery seam is unavailable (%s): answering callbacks 503",
                outside(exc, 200) if isinstance(exc, DeliveryUnavailableError) else repr(exc),
                exc_info=not isinstance(exc, DeliveryUnavailableError),
            )

    def _check_body(
        self, ref: str, headers: Mapping[str, str], body: bytes
    ) -> Delivery | ReceiverResponse:
        """JSON, signature and shape: the delivery to publish, or the refusal."""
        payload = parse_json(body)
        if payload is NOT_JSON:
            return self._bad_body("the body is not JSON")
        if self._webhook_key is not None:
            try:
                verify_signature(
                    payload if isinstance(payload, dict) else {},
                    headers,
                    self._webhook_key,
                    tolerance=self.tolerance,
                )
            except WebhookVerificationError as exc:
                self.stats.rejected_signature += 1
                self._rejections.refused("signature check failed", outside(exc, 200))
                return _reject(401, "signature check failed")
        try:
            event = self._wire.structure_callback(payload)
        except CallbackParseError as exc:
            return self._bad_body(str(exc))
        return Delivery(ref, event, len(body), body)

    def _answer(self, outcome: DeliveryResult, delivery: Delivery) -> ReceiverResponse:
        event = delivery.event
        if outcome is DeliveryResult.MISMATCH:
            self.stats.rejected_mismatch += 1
            self._rejections.refused(
                "task id does not match the callback URL", outside(event.task_id)
            )
            return _reject(403, "task id does not match the callback URL")
        if self._files and event.stage in _INPUT_FETCHED:
            self._files.task_moved_on(delivery.ref)
        if outcome is DeliveryResult.ACCEPTED:
            self.stats.accepted += 1
            if self.on_event is not None:
                self._spawn_hook(self.on_event, event)
        elif outcome is DeliveryResult.ORPHANED:
            self.stats.orphaned += 1
            if self.on_unclaimed is not None:
                self._spawn_hook(self.on_unclaimed, event)
        else:
            self.stats.ignored += 1
            log.debug(
                "ignored a %s callback for task %s",
                outside(event.callback_type),
                outside(event.task_id),
            )
        return _RECEIVED

    def _too_large(self) -> ReceiverResponse:
        self.stats.rejected_size += 1
        self._rejections.refused(f"body over {self.max_body_size} bytes")
        return _reject(413, "body too large")

    def _bad_body(self, reason: str) -> ReceiverResponse:
        self.stats.rejected_body += 1
        self._rejections.refused("malformed body", outside(reason, 200))
        return _reject(400, reason)

    def _spawn_hook(self, hook: EventHook, event: CallbackEvent) -> None:
        task = asyncio.get_running_loop().create_task(self._run_hook(hook, event))
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)

    async def _run_hook(self, hook: EventHook, event: CallbackEvent) -> None:
        try:
            result = hook(event)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.stats.hook_errors += 1
            log.exception("the on_event hook failed for task %s", outside(event.task_id))


def _not_serving(*args: object, **kwargs: object) -> Any:
    raise RuntimeError("the receiver is not serving: start() it or mount() it first")


RECEIVER_KEY: AppKey[CallbackReceiver] = AppKey("addvocals_receiver", CallbackReceiver)
"""Where ``mount`` keeps the receiver in an aiohttp application: ``app[RECEIVER_KEY]``."""
