"""The callback receiver: authenticate, parse and dispatch callbacks to task states.

One ``CallbackReceiver`` serves three ways:

- embedded: ``async with CallbackReceiver(host=..., port=0, public_url=...)`` runs its own
  aiohttp ``AppRunner`` + ``TCPSite``; the bind address and the advertised URL are separate,
  for proxies and tunnels;
- mounted: ``receiver.mount(app, path="/addvocals")`` adds its route to your aiohttp app;
- anywhere else: ``await receiver.handle(path, headers, body)`` returns a status and a JSON
  body for any web framework to send back.

A request is checked in order of cost: the URL token (constant time, no lookup), the body
size, the JSON, the kie signature when a key is set, the shape. Only then is it handed to
the ``DeliveryBackend``, which finds the task and applies the event. The handler does no
network I/O and runs no user code inline: ``on_event`` hooks run as tasks of their own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import inspect
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs
import yarl
from aiohttp import web

from ._convert import CallbackParseError, WireFormat, wire
from ._errors import WebhookVerificationError
from ._models import CallbackEvent
from ._signing import DEFAULT_TOLERANCE, Secret, TokenSigner, as_secret, verify_signature
from ._tasks import TaskState

__all__ = [
    "RECEIVER_KEY",
    "CallbackReceiver",
    "DeliveryBackend",
    "DeliveryResult",
    "InMemoryBackend",
    "ReceiverResponse",
    "ReceiverStats",
    "Registration",
]

log = logging.getLogger("addvocals_async.receiver")

SECRET_ENV = "ADDVOCALS_RECEIVER_SECRET"
WEBHOOK_KEY_ENV = "ADDVOCALS_WEBHOOK_HMAC_KEY"
DEFAULT_MAX_BODY = 1024 * 1024

EventHook = Callable[[CallbackEvent], Awaitable[None] | None]


class DeliveryResult(enum.Enum):
    ACCEPTED = "accepted"  # moved a task forward
    IGNORED = "ignored"  # duplicate, regression, late or unknown type: acknowledged, no effect
    ORPHANED = "orphaned"  # genuine, but no task is attached here: kept for a later attach
    MISMATCH = "mismatch"  # the body names another task than the URL token belongs to


class DeliveryBackend(Protocol):
    """Where callbacks meet their tasks. The in-memory backend serves one process; an
    implementation over a shared store (Redis pub/sub, say) lets many processes share
    callbacks without changing the receiver or the client."""

    def register(self, ref: str, state: TaskState) -> None: ...

    def unregister(self, ref: str) -> None: ...

    def bind(self, ref: str, task_id: str) -> None: ...

    def attach(self, state: TaskState) -> None: ...

    def deliver(self, ref: str, event: CallbackEvent) -> DeliveryResult: ...

    def close(self) -> None: ...


class _LRU(collections.OrderedDict[str, Any]):
    """A dict that forgets its oldest entries beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class InMemoryBackend:
    """Dispatch in one process: O(1) dictionaries, nothing kept for finished tasks but a
    bounded memory of recent references (to keep rejecting cross-task bodies) and of
    callbacks for tasks nobody has attached yet.

    A registered task takes callbacks only through its own URL. A task re-attached by id
    (``client.task``) takes them through the first genuine URL that names it, and from then
    on only through that one. A registration silent for ``ttl`` seconds (a task whose
    callbacks were lost and that nobody waits for any more) is dropped, so a long-running
    service does not collect them; its waiters, if any, go on by polling.
    """

    def __init__(
        self, *, memory: int = 4096, orphan_events_per_task: int = 4, ttl: float = 6 * 3600
    ) -> None:
        self._by_ref: dict[str, TaskState] = {}
        self._by_task: dict[str, TaskState] = {}
        self._ref_task = _LRU(memory)  # ref -> task id, for refs with no live registration
        self._orphans = _LRU(memory)  # task id -> events nobody was waiting for, one per type
        self._finished = _LRU(memory)  # task ids that reached a terminal stage here
        self._orphan_cap = orphan_events_per_task
        self.ttl = ttl
        self._on_finished = self._forget  # bound once, shared by every task's clean-up

    def __len__(self) -> int:
        """How many tasks are registered or attached (0 once all have finished)."""
        return len({*map(id, self._by_ref.values()), *map(id, self._by_task.values())})

    def register(self, ref: str, state: TaskState) -> None:
        self._expire()
        self._by_ref[ref] = state
        state.ref = ref
        state.on_terminal(self._on_finished)

    def unregister(self, ref: str) -> None:
        state = self._by_ref.pop(ref, None)
        if state is not None and state.task_id is not None:
            if self._by_task.get(state.task_id) is state:
                del self._by_task[state.task_id]
            self._ref_task.put(ref, state.task_id)  # the URL stays that task's alone

    def bind(self, ref: str, task_id: str) -> None:
        state = self._by_ref.get(ref)
        if state is not None:
            self._by_task[task_id] = state

    def attach(self, state: TaskState) -> None:
        assert state.task_id is not None
        if state.stage.is_terminal:
            return
        self._expire()
        self._by_task[state.task_id] = state
        state.on_terminal(self._on_finished)
        for event in self._orphans.pop(state.task_id, ()):
            state.apply(event)

    def deliver(self, ref: str, event: CallbackEvent) -> DeliveryResult:
        state = self._by_ref.get(ref)
        if state is not None:
            if state.task_id is not None and state.task_id != event.task_id:
                return DeliveryResult.MISMATCH
            accepted = state.apply(event)
            task_id = state.task_id
            if task_id is not None and task_id not in self._by_task and not state.stage.is_terminal:
                self._by_task[task_id] = state  # an early callback named it before bind() did
            return DeliveryResult.ACCEPTED if accepted else DeliveryResult.IGNORED
        # A genuine token with no live registration: a restart, another process, or a
        # task that already finished. The first task id seen for a ref stays its owner.
        owner = self._ref_task.get(ref)
        if owner is not None and owner != event.task_id:
            return DeliveryResult.MISMATCH
        attached = self._by_task.get(event.task_id)
        if attached is not None:
            if attached.ref is None:
                attached.ref = ref  # a re-attached task: this URL is now its own
            elif attached.ref != ref:
                return DeliveryResult.MISMATCH  # another task's URL, even an old one
        self._ref_task.put(ref, event.task_id)
        if attached is not None:
            return DeliveryResult.ACCEPTED if attached.apply(event) else DeliveryResult.IGNORED
        if event.task_id in self._finished:
            # A duplicate or late callback of a task that finished here: not an orphan.
            return DeliveryResult.IGNORED
        kept: list[CallbackEvent] = self._orphans.get(event.task_id) or []
        # One of each type (a sender's retries repeat them), and only a few types.
        if len(kept) < self._orphan_cap and all(
            e.callback_type != event.callback_type for e in kept
        ):
            kept.append(event)
        self._orphans.put(event.task_id, kept)
        return DeliveryResult.ORPHANED

    def _forget(self, state: TaskState) -> None:
        ref = state.ref
        if state.task_id is not None:
            self._finished.put(state.task_id, True)
        if ref is not None:
            if self._by_ref.get(ref) is state:
                del self._by_ref[ref]
            if state.task_id is not None:
                self._ref_task.put(ref, state.task_id)
        if state.task_id is not None and self._by_task.get(state.task_id) is state:
            del self._by_task[state.task_id]

    def _expire(self, *, now: float | None = None, batch: int = 8) -> None:
        """Drop a few of the oldest registrations silent for longer than ``ttl``: amortised
        O(1) per registration, so nothing lost for good piles up."""
        limit = (time.monotonic() if now is None else now) - self.ttl
        for table in (self._by_ref, self._by_task):
            for _ in range(batch):
                key, state = next(iter(table.items()), ("", None))
                if state is None or state.last_activity >= limit:
                    break
                state.on_terminal(None)
                self._forget(state)
                table.pop(key, None)
                state.stop_expecting_callbacks()

    def close(self) -> None:
        states = {*self._by_ref.values(), *self._by_task.values()}
        self._by_ref.clear()
        self._by_task.clear()
        for state in states:
            state.stop_expecting_callbacks()


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
    hook_errors: int = 0

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
class Registration:
    """A task's place at the receiver: ``ref`` names it, ``callback_url`` is sent to the API."""

    ref: str
    callback_url: str


_RECEIVED = ReceiverResponse(200, {"status": "received"})
_RECEIVED_JSON = _RECEIVED.json().encode()


def _reject(status: int, reason: str) -> ReceiverResponse:
    return ReceiverResponse(status, {"status": "rejected", "reason": reason})


_FORBIDDEN = _reject(403, "invalid callback token")


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
    ) -> None:
        if public_url is not None:
            url = yarl.URL(public_url)
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError(f"public_url must be an absolute http(s) URL, got {public_url!r}")
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
        self._webhook_key = as_secret(webhook_hmac_key, WEBHOOK_KEY_ENV)
        self.tolerance = tolerance
        self.max_body_size = max_body_size
        self.backend: DeliveryBackend = backend if backend is not None else InMemoryBackend()
        self.on_event = on_event
        self.on_unclaimed = on_unclaimed
        self.stats = ReceiverStats()
        self._wire = wire_format or wire
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._bound_url: yarl.URL | None = None
        self._hooks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._in_flight = 0  # callback requests being received or handled right now
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
        app = web.Application(client_max_size=self.max_body_size + 1)
        self.mount(app, path=self.path, close_with_app=False)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=self._shutdown_timeout
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
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
            await self._drain()
            await runner.cleanup()
        self.backend.close()
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
                "the receiver has no URL yet: start it (async with CallbackReceiver(...)) "
                "or give it a public_url"
            )
        return str(self._bound_url)

    # ---------------------------------------------------------------- mounting

    def mount(
        self, app: web.Application, *, path: str | None = None, close_with_app: bool = True
    ) -> None:
        """Add the callback route (``POST {path}/cb/{token}``) to an aiohttp application and
        store this receiver as ``app[RECEIVER_KEY]``. The receiver closes with the app."""
        prefix = (path if path is not None else self.path).rstrip("/")
        app.router.add_post(f"{prefix}/cb/{{token}}", self._aiohttp_handler)
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

    async def _aiohttp_handler(self, request: web.Request) -> web.Response:
        self._in_flight += 1  # counted so that aclose() lets it finish
        try:
            ref = self._ref_for(request.match_info["token"])  # before reading a single byte
            length = request.content_length
            if ref is None:
                response = _FORBIDDEN
            elif length is not None and length > self.max_body_size:
                response = self._too_large()
            elif length is not None:
                response = self._handle_body(ref, request.headers, await request.read())
            else:  # chunked: count as it arrives
                body = bytearray()
                async for chunk in request.content.iter_chunked(65536):
                    body += chunk
                    if len(body) > self.max_body_size:
                        response = self._too_large()
                        break
                else:
                    response = self._handle_body(ref, request.headers, bytes(body))
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._drained is not None:
                self._drained.set()
        if response is _RECEIVED:
            return web.Response(body=_RECEIVED_JSON, content_type="application/json")
        return web.json_response(response.body, status=response.status)

    # ---------------------------------------------------------------- registration

    def register(self, state: TaskState) -> Registration:
        """Give ``state`` a callback URL; callbacks to it reach ``state`` from now on,
        even before the submit that uses it has returned."""
        if self._closed:
            raise RuntimeError("the receiver is closed")
        ref, token = self._signer.new_token()
        url = yarl.URL(self.url) / "cb" / token
        state.callbacks_expected = True
        self.backend.register(ref, state)
        return Registration(ref=ref, callback_url=str(url))

    def bind(self, registration: Registration, task_id: str) -> None:
        self.backend.bind(registration.ref, task_id)

    def adopt(self, registration: Registration, state: TaskState) -> None:
        """Route ``registration``'s callbacks to ``state`` from now on, instead of the
        state it was made for (the submit answered with another task id than an early
        callback claimed: the answer wins)."""
        self.backend.unregister(registration.ref)
        state.callbacks_expected = True
        self.backend.register(registration.ref, state)

    def unregister(self, registration: Registration) -> None:
        self.backend.unregister(registration.ref)

    def attach(self, state: TaskState) -> None:
        """Route callbacks for an existing task (by its id) to ``state``."""
        if self._closed:
            return
        state.callbacks_expected = True
        self.backend.attach(state)

    # ---------------------------------------------------------------- handling

    async def handle(self, path: str, headers: Mapping[str, str], body: bytes) -> ReceiverResponse:
        """Handle one callback request from any web framework: ``path`` is the request
        path (ending in ``/cb/<token>``), ``headers`` its headers, ``body`` the raw bytes."""
        head, _, token = path.rstrip("/").rpartition("/")
        if not head.endswith("/cb"):
            self.stats.rejected_token += 1
            return _reject(404, "not a callback path")
        return self.handle_token(token, headers, body)

    def handle_token(self, token: str, headers: Mapping[str, str], body: bytes) -> ReceiverResponse:
        """``handle`` for a token already taken from the path; synchronous, but like
        everything that touches tasks it must run on the event loop's thread."""
        asyncio.get_running_loop()  # raises before anything is applied when off the loop
        ref = self._ref_for(token)
        if ref is None:
            return _FORBIDDEN
        if len(body) > self.max_body_size:
            return self._too_large()
        return self._handle_body(ref, headers, body)

    def _ref_for(self, token: str) -> str | None:
        ref = self._signer.check(token)
        if ref is None:
            self.stats.rejected_token += 1
            log.warning("refused a callback with an invalid URL token")
        return ref

    def _handle_body(self, ref: str, headers: Mapping[str, str], body: bytes) -> ReceiverResponse:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nesting too deep to parse
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
                log.warning("refused a callback: %s", exc)
                return _reject(401, "signature check failed")
        try:
            event = self._wire.structure_callback(payload)
        except CallbackParseError as exc:
            return self._bad_body(str(exc))
        outcome = self.backend.deliver(ref, event)
        if outcome is DeliveryResult.MISMATCH:
            self.stats.rejected_mismatch += 1
            log.warning("refused a callback for task %s sent to another task's URL", event.task_id)
            return _reject(403, "task id does not match the callback URL")
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
            log.debug("ignored a %s callback for task %s", event.callback_type, event.task_id)
        return _RECEIVED

    def _too_large(self) -> ReceiverResponse:
        self.stats.rejected_size += 1
        log.warning("refused a callback body over %d bytes", self.max_body_size)
        return _reject(413, "body too large")

    def _bad_body(self, reason: str) -> ReceiverResponse:
        self.stats.rejected_body += 1
        log.warning("refused a malformed callback: %s", reason)
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
            log.exception("the on_event hook failed for task %s", event.task_id)


RECEIVER_KEY: web.AppKey[CallbackReceiver] = web.AppKey("addvocals_receiver", CallbackReceiver)
"""Where ``mount`` keeps the receiver in an aiohttp application: ``app[RECEIVER_KEY]``."""
