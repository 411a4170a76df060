"""The delivery seam over Redis, for many processes and hosts (``pip install
'addvocals_async[redis]'``).

Give every receiver and every client's receiver a ``RedisBackend`` over the same Redis
and the same receiver secret: a callback that lands on any process reaches the process
that awaits its task, early callbacks and callbacks received while that process was down
included::

    backend = RedisBackend("redis://:password@redis.internal:6379/0")
    await backend.connect()  # fail fast, naming the URL (never its password)
    async with CallbackReceiver(secret=SECRET, backend=backend) as receiver:
        ...

How it keeps the seam's rules (``addvocals_async._delivery``), with every key under
``prefix`` and every key expiring:

- ``{prefix}claim:{ref}``: the task id that owns a callback URL. ``SET NX EX`` for a
  callback's claim, a plain ``SET EX`` for the submit's authoritative answer.
- ``{prefix}events:{task_id}``: the task's callbacks, a Stream capped at
  ``events_per_task`` entries, one entry per (URL, callback type) (the sender's retries
  are acknowledged and not stored twice). Replayed to every new subscriber, in this
  process or after a restart, so nothing that came early or while nobody listened is lost.
- ``{prefix}feed``: every callback of every task, a Stream capped at about
  ``feed_length`` entries, which each process reads with ONE blocking ``XREAD``; a process
  hands each entry to its own subscribers and skips the rest. ``{prefix}seq`` numbers the
  feed's entries so that a process that fell behind the cap sees the gap and re-reads the
  streams of the tasks it awaits.

- ``{prefix}home:{task_id}``: the URL reference the submit's answer gave the task; a
  callback naming the task through any other URL is refused (and claims nothing).
- ``{prefix}watch:task:{task_id}`` / ``{prefix}watch:ref:{ref}``: which processes await a
  task or URL (a set of process tokens, leased for ``lease`` seconds and renewed), so a
  receiver anywhere can tell a callback somebody awaits from an orphan (``on_unclaimed``).

``publish`` is one Lua script (claim and home checks, de-duplication, both ``XADD``, the
TTLs): atomic, nothing written unless every check passed; callbacks published at the same
moment share one pipeline. When this process awaits the task itself the delivery is also
applied at once, without waiting for the feed.

Companions on the same Redis and prefix: ``RedisPendingStore`` (``backend.pending_store``)
and ``RedisSubmitThrottle`` (``backend.submit_throttle``), the account's submit rate shared
by every process.

When Redis goes away, ``publish`` raises ``DeliveryUnavailableError`` (the receiver answers
503, the sender retries later), subscribers are told ``seam_available(False)`` (their
waiters poll), the reader reconnects with backoff, and on its return subscribers are told
``seam_available(True)`` and get what they missed. Each transition is logged once.

With Redis Cluster, keep every key in one slot: a prefix with a hash tag, ``"{addvocals}:"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias

import yarl

try:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import NoScriptError, RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "addvocals_async.redis needs redis-py: pip install 'addvocals_async[redis]'"
    ) from exc

from ._config import time_scale
from ._convert import WireFormat, parse_json, wire
from ._delivery import Delivery, DeliveryResult, Subscriber
from ._errors import DeliveryUnavailableError
from ._pending import DEFAULT_MAX_AGE, PendingSubmit
from ._throttle import DEFAULT_LIMIT, DEFAULT_WINDOW, SlidingWindowThrottle

__all__ = ["RedisBackend", "RedisPendingStore", "RedisSubmitThrottle", "redact_url"]

log = logging.getLogger("addvocals_async.redis")

CLOSE_TIMEOUT = 2.0
"""How long ``aclose()`` waits for the reader task to end after cancelling it."""

Client: TypeAlias = "aioredis.Redis | RedisCluster"

DEFAULT_TTL = 6 * 3600
DEFAULT_PREFIX = "addvocals:"

# What "Redis is not there" looks like from redis-py (a restarting server's LOADING answer
# included); anything else is a bug to surface.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS: claim, events, feed, seq, home, watch by task, watch by ref.  ARGV: task id, ref,
# callback type, body.  TTL, PER_TASK and FEED are the backend's settings, written into its
# copy of the script (fewer arguments to send with every callback).  Returns {"mismatch"},
# {"duplicate"} or {"stored", sid, fresh claim (0/1), awaited anywhere (0/1)}.
#
# Nothing is written before every check has passed: a refused callback claims nothing.
# ``home`` is the URL the submit's answer gave the task (``claim(authoritative=True)``): a
# callback naming the task through any other URL is refused here, in every process alike.
_PUBLISH = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return {'mismatch'}
end
local home = redis.call('GET', KEYS[5])
if home and home ~= ARGV[2] then
  return {'mismatch'}
end
local mark = ARGV[2] .. '|' .. ARGV[3]
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
  if entry[2][2] == mark then
    return {'duplicate'}
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', TTL)
local sid = redis.call('XADD', KEYS[2], 'MAXLEN', PER_TASK, '*',
  'mark', mark, 'ref', ARGV[2], 'body', ARGV[4])
redis.call('EXPIRE', KEYS[2], TTL)
local n = redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], TTL)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', FEED, '*',
  'task', ARGV[1], 'sid', sid, 'ref', ARGV[2], 'n', n, 'body', ARGV[4])
redis.call('EXPIRE', KEYS[3], TTL)
local awaited = redis.call('EXISTS', KEYS[6], KEYS[7])
return {'stored', sid, owner and 0 or 1, awaited > 0 and 1 or 0}
"""

# Undo a publish this process's own subscriber refused after the script stored it (its
# task takes callbacks through another URL, which the script could not know): the claim
# it made and the stored entry go. KEYS: claim, events.  ARGV: task id, stream id.
_UNCLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('XDEL', KEYS[2], ARGV[2])
return 1
"""


def redact_url(url: str | yarl.URL) -> str:
    """``url`` with its password (if any) shown as ``***``: the only way a Redis URL is
    ever logged, shown in a repr or put in an error by this module."""
    parsed = yarl.URL(url)
    query_password = "password" in parsed.query
    if query_password:
        parsed = parsed.update_query(password="***")
    if parsed.password is not None:
        parsed = parsed.with_password("***")
    return str(parsed)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Mapping[Any, Any]) -> dict[str, Any]:
    return {_text(key): value for key, value in raw.items()}


def _stream_id(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


class _Entry(NamedTuple):
    """One stored callback: the task's stream id names it across the feed and replays."""

    task_id: str
    sid: str
    ref: str
    body: bytes | str


class _Watch:
    """The local subscribers of one task id (or one callback URL) and what they have seen.

    ``live`` get every new entry; ``joining`` wait for their replay, which ``replaying``
    are getting right now (entries handed to ``live`` meanwhile are kept in ``buffer``
    for them). ``seen`` names the entries ``live`` already have: a task's stream is capped,
    so it stays small."""

    __slots__ = ("buffer", "joining", "live", "replaying", "seen")

    def __init__(self) -> None:
        self.live: list[Subscriber] = []
        self.joining: list[Subscriber] = []
        self.replaying: list[Subscriber] = []
        self.buffer: list[tuple[tuple[str, str], Delivery]] = []
        # What each entry did to ``live`` (the publisher of an entry the feed brought
        # first learns it here).
        self.seen: dict[tuple[str, str], DeliveryResult | None] = {}

    def __len__(self) -> int:
        return len(self.live) + len(self.joining) + len(self.replaying)

    def everyone(self) -> Iterable[Subscriber]:
        yield from self.live
        yield from self.joining
        yield from self.replaying


_WatchKey: TypeAlias = "tuple[str, str]"  # ("task", task_id) or ("ref", ref)


class RedisBackend:
    """The delivery seam over Redis Streams; see the module docstring.

    ``redis`` is a URL (``redis://[:password@]host:port/db``, ``rediss://``, ``unix://``)
    or a client you made (``redis.asyncio.Redis`` or ``RedisCluster``; it stays yours to
    close, and its ``socket_timeout`` must exceed ``block``). Options:

    - ``prefix``: put before every key (default ``"addvocals:"``);
    - ``ttl``: seconds every key lives after its last write (default 6 h);
    - ``events_per_task``: the cap of a task's stream (default 16);
    - ``feed_length``: the approximate cap of the shared feed (default 10,000 entries);
    - ``block``: seconds one ``XREAD`` blocks (default 1 s);
    - ``reconnect_max``: the longest pause between reconnection attempts (default 2 s);
    - ``max_connections``: the pool's size when made from a URL (default 64; a burst
      beyond it waits for a free connection);
    - ``wire_format``: the converter used to store events (default: the package's);
    - ``lease``: how long this process's registrations as awaiting a task outlive it
      (default 120 s; renewed every third of it while it runs). They let a receiver in
      any process tell a callback somebody awaits (``ACCEPTED``) from an orphan
      (``ORPHANED``: ``on_unclaimed`` fires).
    """

    def __init__(
        self,
        redis: str | Client,
        *,
        prefix: str = DEFAULT_PREFIX,
        ttl: float = DEFAULT_TTL,
        events_per_task: int = 16,
        feed_length: int = 10_000,
        block: float = 1.0,
        reconnect_max: float = 2.0,
        max_connections: int = 64,
        wire_format: WireFormat | None = None,
        lease: float = 120.0,
    ) -> None:
        if ttl < 1:
            raise ValueError("ttl must be at least 1 second")
        if events_per_task < 4:
            raise ValueError("events_per_task must be at least 4 (one per callback type)")
        self._owns_client = isinstance(redis, str)
        if isinstance(redis, str):
            self.url = redact_url(redis)
            try:
                # A bounded pool that makes a burst wait for a connection rather than fail.
                pool = aioredis.BlockingConnectionPool.from_url(
                    redis,
                    max_connections=max_connections,
                    timeout=5,
                    socket_timeout=max(5.0, block + 4.0),
                    socket_connect_timeout=2.0,
                    # One retry on a fresh connection: a pooled one may be dead after a
                    # Redis restart. Longer outages are this backend's to handle.
                    retry=Retry(NoBackoff(), 1),
                )
                self._redis: Client = aioredis.Redis.from_pool(pool)
            except ValueError:
                raise ValueError(f"not a Redis URL: {self.url}") from None
        else:
            self._redis = redis
            self.url = _describe(redis)
        if isinstance(self._redis, RedisCluster) and not _has_hash_tag(prefix):
            raise ValueError(
                "with Redis Cluster the prefix needs a hash tag, e.g. '{addvocals}:', so that "
                "one script can reach a task's keys and the feed"
            )
        self.prefix = prefix
        self.ttl = int(ttl)
        self.events_per_task = events_per_task
        self.feed_length = feed_length
        self.block = block
        self.reconnect_max = reconnect_max
        self._wire = wire_format or wire
        self._publish_source = (
            _PUBLISH.replace("TTL", str(int(ttl)))
            .replace("PER_TASK", str(events_per_task))
            .replace("FEED", str(feed_length))
        )
        self._publish_script = self._redis.register_script(self._publish_source)
        self._unclaim_script = self._redis.register_script(_UNCLAIM)
        self._batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._no_key = f"{prefix}none"  # never written: the undo keeps a claim it did not make
        self._token = secrets.token_hex(8)  # this process's name in the registrations
        self.lease = max(3.0, min(float(self.ttl), lease))
        self._register: set[_WatchKey] = set()
        self._unregister: set[_WatchKey] = set()
        self._next_refresh = 0.0
        self._feed_key = f"{prefix}feed"
        self._seq_key = f"{prefix}seq"
        self._watches: dict[_WatchKey, _Watch] = {}
        self._dirty: set[_WatchKey] = set()  # watches whose streams must be (re)read
        self._wanted: asyncio.Event | None = None
        self._reader: asyncio.Task[None] | None = None
        self._available = True
        self._told_down: dict[int, Subscriber] = {}
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"RedisBackend(url={self.url!r}, prefix={self.prefix!r}, "
            f"subscriptions={len(self)}, available={self._available})"
        )

    def __len__(self) -> int:
        """How many subscriptions are open (0 once every awaited task has finished)."""
        return sum(len(watch) for watch in self._watches.values())

    async def __aenter__(self) -> RedisBackend:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def available(self) -> bool:
        """False while the reader has lost Redis (its subscribers' waiters poll meanwhile)."""
        return self._available

    @property
    def client(self) -> Client:
        """The redis-py client this backend talks through."""
        return self._redis

    # ---------------------------------------------------------------- keys

    def claim_key(self, ref: str) -> str:
        return f"{self.prefix}claim:{ref}"

    def events_key(self, task_id: str) -> str:
        return f"{self.prefix}events:{task_id}"

    def home_key(self, task_id: str) -> str:
        """The URL reference the submit's answer gave ``task_id``."""
        return f"{self.prefix}home:{task_id}"

    def watch_key(self, key: tuple[str, str]) -> str:
        """The registration of the processes awaiting a task (``("task", id)``) or a
        callback URL (``("ref", ref)``): a set of process tokens, leased."""
        return f"{self.prefix}watch:{key[0]}:{key[1]}"

    # ---------------------------------------------------------------- the seam

    async def connect(self) -> None:
        """Check that Redis answers; ``DeliveryUnavailableError`` naming the URL (without
        its password) if not. Optional: every operation connects on its own."""
        await self._call(self._redis.ping())

    async def claim(self, ref: str, task_id: str, *, authoritative: bool = False) -> str:
        key = self.claim_key(ref)
        if authoritative:
            # The submit's answer: the URL is the task's, and the task's only URL (``home``),
            # so a callback naming it through any other URL is refused by every process.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, task_id, ex=self.ttl)
                pipe.set(self.home_key(task_id), ref, ex=self.ttl)
                await self._call(pipe.execute())
            return task_id
        if await self._call(self._redis.set(key, task_id, ex=self.ttl, nx=True)):
            return task_id
        owner = await self.owner(ref)
        return owner if owner is not None else await self.claim(ref, task_id)

    async def owner(self, ref: str) -> str | None:
        owner = await self._call(self._redis.get(self.claim_key(ref)))
        return None if owner is None else _text(owner)

    async def publish(self, delivery: Delivery) -> DeliveryResult:
        if self._closed:
            raise DeliveryUnavailableError("the Redis delivery backend is closed")
        event = delivery.event
        body: bytes | str = (
            delivery.body  # as received: already JSON the receiver parsed
            if delivery.body is not None
            else json.dumps(self._wire.unstructure_callback(event), separators=(",", ":"))
        )
        answer = await self._call(
            self._publish_batched(
                (
                    self.claim_key(delivery.ref),
                    self.events_key(event.task_id),
                    self._feed_key,
                    self._seq_key,
                    self.home_key(event.task_id),
                    self.watch_key(("task", event.task_id)),
                    self.watch_key(("ref", delivery.ref)),
                    event.task_id,
                    delivery.ref,
                    event.callback_type,
                    body,
                )
            )
        )
        outcome = _text(answer[0])
        if outcome == "mismatch":
            return DeliveryResult.MISMATCH
        if outcome == "duplicate":
            return DeliveryResult.IGNORED
        # Awaited here too: apply it now rather than when the feed brings it back.
        sid = _text(answer[1])
        entry = _Entry(event.task_id, sid, delivery.ref, body)
        local = self._dispatch(entry, delivery)
        if local is DeliveryResult.MISMATCH:
            # Refused here (the task takes callbacks through another URL, which Redis did
            # not know): it must claim nothing, and stays stored for nobody.
            fresh = int(answer[2]) if len(answer) > 2 else 0
            await self._call(
                self._unclaim_script(
                    keys=[
                        self.claim_key(delivery.ref) if fresh else self._no_key,
                        self.events_key(event.task_id),
                    ],
                    args=[event.task_id, sid],
                )
            )
            return local
        if local is not None:
            return local
        # Stored for whichever process awaits the task; when none is registered as
        # awaiting it anywhere, it is an orphan (kept for a later subscriber all the same).
        awaited = len(answer) > 3 and int(answer[3]) == 1
        return DeliveryResult.ACCEPTED if awaited else DeliveryResult.ORPHANED

    def subscribe(
        self, subscriber: Subscriber, *, task_id: str | None = None, ref: str | None = None
    ) -> None:
        if self._closed:
            subscriber.seam_closed()
            return
        key: _WatchKey | None = (
            ("ref", ref) if ref is not None else ("task", task_id) if task_id is not None else None
        )
        if key is None:
            raise TypeError("subscribe needs task_id= or ref=")
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = _Watch()
            self._register.add(key)
            self._unregister.discard(key)
        if subscriber in watch.everyone():
            return
        watch.joining.append(subscriber)
        self._dirty.add(key)
        if not self._available and id(subscriber) not in self._told_down:
            self._told_down[id(subscriber)] = subscriber
            subscriber.seam_available(False)
        self._wake_reader()

    def unsubscribe(
        self, subscriber: Subscriber, *, task_id: str | None = None, ref: str | None = None
    ) -> None:
        keys: list[_WatchKey] = []
        if task_id is not None:
            keys.append(("task", task_id))
        if ref is not None:
            keys.append(("ref", ref))
        for key in keys:
            watch = self._watches.get(key)
            if watch is None:
                continue
            for group in (watch.live, watch.joining, watch.replaying):
                if subscriber in group:
                    group.remove(subscriber)
            if not len(watch):
                del self._watches[key]
                self._dirty.discard(key)
                self._register.discard(key)
                self._unregister.add(key)
                if self._reader is not None and self._wanted is not None:
                    self._wanted.set()

    async def aclose(self) -> None:
        """Stop reading, tell every subscriber (``seam_closed``), and close the client if
        this backend made it from a URL."""
        if self._closed:
            return
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            # Bounded: a blocked read inside redis-py (a paused or failing-over server)
            # may swallow the cancellation; closing must not wait for it forever. And
            # asyncio.wait, unlike awaiting the task, never eats our caller's own cancel.
            done, _ = await asyncio.wait({reader}, timeout=CLOSE_TIMEOUT)
            if not done:
                log.warning(
                    "the Redis reader did not stop within %.0f s; closing without it",
                    CLOSE_TIMEOUT,
                )
        everyone = self._subscribers()
        self._unregister.update(self._watches)
        self._watches.clear()
        self._dirty.clear()
        self._register.clear()
        if self._unregister:
            # Best effort, bounded: a registration left behind expires with its lease.
            with contextlib.suppress(*_UNREACHABLE, RedisError, asyncio.TimeoutError):
                await asyncio.wait_for(self._sync_registrations(), CLOSE_TIMEOUT)
        for subscriber in everyone:
            subscriber.seam_closed()
        if self._owns_client:
            with contextlib.suppress(*_UNREACHABLE):
                await self._redis.aclose()

    # ---------------------------------------------------------------- internals

    def _publish_batched(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """The publish script for ``args`` (its 7 keys, then its arguments), sent with every
        other publish made meanwhile in one pipeline: under load, one connection, one write
        and one read for a burst of callbacks instead of one each."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batch.append((args, future))
        if len(self._batch) == 1:
            asyncio.get_running_loop().call_soon(self._start_flush)
        return future

    def _start_flush(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        sha = self._publish_script.sha
        try:
            answers = await self._evalsha_all(sha, batch)
            if any(isinstance(a, NoScriptError) for a in answers):
                # A restarted (or flushed) server forgot the script: load it, send again.
                await self._redis.script_load(self._publish_source)
                answers = await self._evalsha_all(sha, batch)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if future.done():
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    async def _evalsha_all(
        self, sha: str, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]
    ) -> list[Any]:
        if len(batch) == 1:
            try:
                return [await self._redis.evalsha(sha, 7, *batch[0][0])]
            except NoScriptError as exc:
                return [exc]
        async with self._redis.pipeline(transaction=False) as pipe:
            for args, _ in batch:
                pipe.evalsha(sha, 7, *args)
            return list(await pipe.execute(raise_on_error=False))

    async def _call(self, command: Any) -> Any:
        """Await a redis-py command; Redis being away becomes ``DeliveryUnavailableError``
        naming the URL without its password."""
        try:
            return await command
        except _UNREACHABLE as exc:
            raise DeliveryUnavailableError(
                f"Redis at {self.url} is unreachable ({_reason(exc, self._secrets())})"
            ) from None

    def _secrets(self) -> tuple[str, ...]:
        return _password_of(self._redis)

    # ---------------------------------------------------------------- companions

    def pending_store(
        self, name: str = "default", *, max_age: float = DEFAULT_MAX_AGE
    ) -> RedisPendingStore:
        """A ``RedisPendingStore`` on this backend's client and prefix (closing it leaves
        the client to this backend)."""
        return RedisPendingStore(self._redis, name=name, prefix=self.prefix, max_age=max_age)

    def submit_throttle(
        self, limit: int = DEFAULT_LIMIT, window: float = DEFAULT_WINDOW
    ) -> RedisSubmitThrottle:
        """A ``RedisSubmitThrottle`` on this backend's client and prefix, shared by every
        process on the same Redis and prefix. ``AddVocalsClient`` uses it by default when
        its receiver's backend is a ``RedisBackend``."""
        return RedisSubmitThrottle(self._redis, prefix=self.prefix, limit=limit, window=window)

    def _subscribers(self) -> list[Subscriber]:
        unique: dict[int, Subscriber] = {}
        for watch in self._watches.values():
            for subscriber in watch.everyone():
                unique[id(subscriber)] = subscriber
        return list(unique.values())

    def _wake_reader(self) -> None:
        if self._reader is None:
            self._wanted = asyncio.Event()
            self._reader = asyncio.get_running_loop().create_task(
                self._read(), name="addvocals-redis-reader"
            )
        assert self._wanted is not None
        self._wanted.set()

    def _dispatch(self, entry: _Entry, delivery: Delivery | None = None) -> DeliveryResult | None:
        """Hand a stored entry to this process's live subscribers, once each; None when
        nobody here awaits its task or URL."""
        watch = self._watches.get(("task", entry.task_id)) or self._watches.get(("ref", entry.ref))
        if watch is None:
            return None
        mark = (entry.task_id, entry.sid)
        if mark in watch.seen:
            # Already handed over (the feed can beat the publisher's own answer): what it did.
            return watch.seen[mark] or DeliveryResult.IGNORED
        watch.seen[mark] = None
        if delivery is None:
            delivery = self._decode(entry)
            if delivery is None:
                return DeliveryResult.IGNORED
        if watch.replaying:
            watch.buffer.append((mark, delivery))
        outcome = watch.seen[mark] = _deliver_to(watch.live, delivery)
        return outcome

    def _decode(self, entry: _Entry) -> Delivery | None:
        try:
            event = self._wire.structure_callback(parse_json(entry.body))
        except ValueError:  # CallbackParseError included
            log.warning("skipped an unreadable stored callback of task %s", entry.task_id)
            return None
        return Delivery(entry.ref, event)

    # ---------------------------------------------------------------- the reader

    async def _read(self) -> None:
        """The one reader of this process: follows the feed, replays the streams of new
        subscriptions, and rides out Redis outages."""
        assert self._wanted is not None
        wanted = self._wanted
        feed_id: str | None = None
        seq: int | None = None
        pending: asyncio.Task[Any] | None = None
        delay = 0.05
        try:
            while not self._closed:  # also ends a loop whose cancel was swallowed
                try:
                    if feed_id is None:
                        feed_id, seq = await self._feed_position()
                        if not self._available:
                            self._back()
                        delay = 0.05
                    if pending is None:
                        pending = asyncio.ensure_future(
                            self._redis.xread(
                                {self._feed_key: feed_id},
                                count=1000,
                                block=max(1, int(self.block * 1000)),
                            )
                        )
                    if time.monotonic() >= self._next_refresh:
                        self._next_refresh = time.monotonic() + self.lease / 3
                        self._register.update(self._watches)
                    if self._register or self._unregister:
                        await self._sync_registrations()
                    if self._dirty:
                        await self._replay()
                    if (
                        not self._dirty
                        and not self._register
                        and not self._unregister
                        and not pending.done()
                    ):
                        waiter = asyncio.ensure_future(wanted.wait())
                        try:
                            await asyncio.wait(
                                {pending, waiter}, return_when=asyncio.FIRST_COMPLETED
                            )
                        finally:
                            waiter.cancel()
                        wanted.clear()
                    if pending.done():
                        done, pending = pending, None
                        for entry, n in self._feed_entries(done.result()):
                            feed_id = entry.sid_in_feed
                            if seq is not None and n != seq + 1:
                                self._resync("the feed skipped entries")
                            seq = n
                            self._dispatch(entry.entry)
                except (*_UNREACHABLE, RedisError) as exc:
                    # Any failure of the reader (a server answering errors while it restarts
                    # too) is an outage: waiters poll until a read succeeds again.
                    if pending is not None:
                        pending.cancel()
                        pending = None
                    feed_id, seq = None, None
                    self._down(exc)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, self.reconnect_max)
        finally:
            if pending is not None:
                pending.cancel()

    async def _sync_registrations(self) -> None:
        """Write this process's registrations (new and renewed) and remove the ended ones,
        one pipeline per 1,000."""
        adding = [key for key in self._register if key in self._watches]
        removing = [key for key in self._unregister if key not in self._watches]
        self._register.clear()
        self._unregister.clear()
        lease = max(1, int(self.lease))
        work = [(True, key) for key in adding] + [(False, key) for key in removing]
        for start in range(0, len(work), 1000):
            chunk = work[start : start + 1000]
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for add, key in chunk:
                        name = self.watch_key(key)
                        if add:
                            pipe.sadd(name, self._token)
                            pipe.expire(name, lease)
                        else:
                            pipe.srem(name, self._token)
                    await pipe.execute()
            except BaseException:
                for add, key in work[start:]:
                    (self._register if add else self._unregister).add(key)
                raise

    async def _feed_position(self) -> tuple[str, int | None]:
        last = await self._redis.xrevrange(self._feed_key, count=1)
        if not last:
            return "0-0", 0
        sid, fields = last[0]
        n = _fields(fields or {}).get("n")
        return _text(sid), None if n is None else int(n)

    def _feed_entries(self, answer: Any) -> Iterable[tuple[_FeedEntry, int]]:
        if not answer:
            return
        streams = answer.items() if isinstance(answer, Mapping) else answer
        for _, messages in streams:
            for raw_id, raw_fields in _messages(messages):
                fields = _fields(raw_fields)
                task_id, sid, ref = (
                    _text(fields["task"]),
                    _text(fields["sid"]),
                    _text(fields["ref"]),
                )
                entry = _Entry(task_id, sid, ref, fields["body"])
                yield _FeedEntry(entry, _text(raw_id)), int(fields["n"])

    def _resync(self, why: str) -> None:
        log.info("re-reading the streams of the awaited tasks: %s", why)
        self._dirty.update(self._watches)

    def _down(self, exc: BaseException) -> None:
        if not self._available:
            return
        self._available = False
        log.error(
            "lost Redis at %s (%s): waiters poll meanwhile; reconnecting",
            self.url,
            _reason(exc, self._secrets()),
        )
        for subscriber in self._subscribers():
            self._told_down[id(subscriber)] = subscriber
            subscriber.seam_available(False)

    def _back(self) -> None:
        self._available = True
        log.warning("Redis at %s is back: callbacks flow again", self.url)
        told, self._told_down = self._told_down, {}
        self._resync("Redis was away")
        self._register.update(self._watches)  # a fresh server knows none of them
        for subscriber in told.values():
            subscriber.seam_available(True)

    async def _replay(self) -> None:
        """Read the streams of the watches marked dirty and hand their joiners everything
        stored, and their live subscribers what they have not seen."""
        keys = [key for key in self._dirty if key in self._watches]
        self._dirty.clear()
        batches = [keys[i : i + 500] for i in range(0, len(keys), 500)]
        for done, batch in enumerate(batches):
            try:
                await self._replay_batch(batch)
            except BaseException:
                for rest in batches[done:]:
                    self._dirty.update(rest)
                raise

    async def _replay_batch(self, keys: list[_WatchKey]) -> None:
        starting: list[tuple[_WatchKey, _Watch, list[Subscriber]]] = []
        for key in keys:
            watch = self._watches[key]
            joiners, watch.joining = watch.joining, []
            watch.replaying.extend(joiners)
            starting.append((key, watch, joiners))
        try:
            owners = await self._owners([key[1] for key, _, _ in starting if key[0] == "ref"])
            task_ids = [
                key[1] if key[0] == "task" else owners.get(key[1]) for key, _, _ in starting
            ]
            streams = await self._streams([t for t in task_ids if t is not None])
        except BaseException:
            for _, watch, joiners in starting:  # put them back for the next attempt
                for subscriber in joiners:
                    if subscriber in watch.replaying:
                        watch.replaying.remove(subscriber)
                        watch.joining.append(subscriber)
                watch.buffer.clear()
            raise
        for (key, watch, joiners), task_id in zip(starting, task_ids, strict=True):
            if self._watches.get(key) is not watch:
                continue  # everyone left meanwhile
            joiners = [s for s in joiners if s in watch.replaying]
            for subscriber in joiners:
                watch.replaying.remove(subscriber)
            stored = streams.get(task_id, []) if task_id is not None else []
            replayed: set[tuple[str, str]] = set()
            for entry in stored:
                mark = (entry.task_id, entry.sid)
                replayed.add(mark)
                fresh = mark not in watch.seen
                targets = (*watch.live, *joiners) if fresh else joiners
                if not targets:
                    continue
                delivery = self._decode(entry)
                if delivery is None:
                    continue
                outcomes = [subscriber.deliver(delivery) for subscriber in targets]
                if fresh:
                    watch.seen[mark] = _best(outcomes)
            for mark, delivery in watch.buffer:
                if mark not in replayed:
                    for subscriber in joiners:
                        subscriber.deliver(delivery)
            if not watch.replaying:
                watch.buffer.clear()
            watch.live.extend(joiners)

    async def _owners(self, refs: list[str]) -> dict[str, str]:
        if not refs:
            return {}
        values = await self._redis.mget([self.claim_key(ref) for ref in refs])
        return {ref: _text(v) for ref, v in zip(refs, values, strict=True) if v is not None}

    async def _streams(self, task_ids: list[str]) -> dict[str, list[_Entry]]:
        if not task_ids:
            return {}
        unique = list(dict.fromkeys(task_ids))
        async with self._redis.pipeline(transaction=False) as pipe:
            for task_id in unique:
                pipe.xrange(self.events_key(task_id))
            answers = await pipe.execute()
        streams: dict[str, list[_Entry]] = {}
        for task_id, messages in zip(unique, answers, strict=True):
            entries = []
            for raw_id, raw_fields in _messages(messages):
                fields = _fields(raw_fields)
                entries.append(_Entry(task_id, _text(raw_id), _text(fields["ref"]), fields["body"]))
            entries.sort(key=lambda e: _stream_id(e.sid))
            streams[task_id] = entries
        return streams


# ------------------------------------------------------------------------ pending store

# KEYS: the record.  ARGV: task id, ttl.  Sets the task id of a record that still exists.
_BIND = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'task_id', ARGV[1])
  return 1
end
return 0
"""


class RedisPendingStore:
    """A ``PendingStore`` in Redis, for workers on many hosts (``addvocals_async._pending``).

    ``name`` keeps one worker's records apart from another's (``resume()`` in a worker
    returns what that worker submitted): give each worker a stable name of its own, such as
    its host and slot, and the worker that replaces it after a crash the same one. Keys:
    ``{prefix}pending:{name}:{ref}`` (a hash per record) and ``{prefix}pending:{name}`` (a
    sorted set of refs by submit time); both expire ``max_age`` seconds after their last
    write, so nothing outlives an abandoned worker for long. ``RedisBackend.pending_store``
    makes one on the backend's own client and prefix.

    When Redis is unreachable, each call raises ``DeliveryUnavailableError`` (a submit is
    then not sent: nothing would record it).
    """

    def __init__(
        self,
        redis: str | Client,
        *,
        name: str = "default",
        prefix: str = DEFAULT_PREFIX,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        if not name or any(c in name for c in ":{} "):
            raise ValueError(f"name must be a word without ':', braces or spaces: {name!r}")
        if not max_age >= 1:
            raise ValueError("max_age must be at least 1 second")
        self._owns_client = isinstance(redis, str)
        self._redis, self.url = _plain_client(redis)
        self.name = name
        self.prefix = prefix
        self.max_age = max_age
        self._index = f"{prefix}pending:{name}"
        self._bind_script = self._redis.register_script(_BIND)
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisPendingStore(url={self.url!r}, prefix={self.prefix!r}, name={self.name!r})"

    def record_key(self, ref: str) -> str:
        return f"{self._index}:{ref}"

    async def _call(self, command: Any) -> Any:
        if self._closed:
            if asyncio.iscoroutine(command):
                command.close()  # made, never to be sent
            raise RuntimeError("this pending store is closed")
        try:
            return await command
        except _UNREACHABLE as exc:
            secrets_ = _password_of(self._redis)
            raise DeliveryUnavailableError(
                f"Redis at {self.url} is unreachable ({_reason(exc, secrets_)})"
            ) from None

    async def record(self, submit: PendingSubmit) -> None:
        ttl = int(self.max_age)
        fields: dict[Any, Any] = {
            "ref": submit.ref,
            "request": json.dumps(dict(submit.request), separators=(",", ":")),
            "created_at": repr(submit.created_at),
        }
        if submit.task_id is not None:
            fields["task_id"] = submit.task_id
        async with self._redis.pipeline(transaction=True) as pipe:
            key = self.record_key(submit.ref)
            pipe.delete(key)
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl)
            pipe.zadd(self._index, {submit.ref: submit.created_at})
            pipe.expire(self._index, ttl)
            await self._call(pipe.execute())

    async def bind(self, ref: str, task_id: str) -> None:
        await self._call(self._bind_script(keys=[self.record_key(ref)], args=[task_id]))

    async def remove(self, ref: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.record_key(ref))
            pipe.zrem(self._index, ref)
            await self._call(pipe.execute())

    async def pending(self) -> list[PendingSubmit]:
        oldest = time.time() - self.max_age
        expired = await self._call(self._redis.zrangebyscore(self._index, "-inf", f"({oldest}"))
        if expired:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self._index, *expired)
                pipe.delete(*(self.record_key(_text(ref)) for ref in expired))
                await self._call(pipe.execute())
        refs = [_text(ref) for ref in await self._call(self._redis.zrange(self._index, 0, -1))]
        records: list[PendingSubmit] = []
        gone: list[str] = []
        for start in range(0, len(refs), 1000):
            chunk = refs[start : start + 1000]
            async with self._redis.pipeline(transaction=False) as pipe:
                for ref in chunk:
                    pipe.hgetall(self.record_key(ref))
                answers = await self._call(pipe.execute())
            for ref, raw in zip(chunk, answers, strict=True):
                fields = {key: _text(value) for key, value in _fields(raw or {}).items()}
                if "ref" not in fields:
                    gone.append(ref)  # expired on its own
                    continue
                request = parse_json(fields.get("request", "{}"))
                records.append(
                    PendingSubmit(
                        ref=ref,
                        task_id=fields.get("task_id") or None,
                        request=request if isinstance(request, dict) else {},
                        created_at=float(fields.get("created_at", "0")),
                    )
                )
        if gone:
            await self._call(self._redis.zrem(self._index, *gone))
        return records

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            with contextlib.suppress(*_UNREACHABLE):
                await self._redis.aclose()


# ------------------------------------------------------------------------ shared throttle

# A sliding window on a sorted set, timed by Redis's own clock (hosts' clocks may differ).
# KEYS: the window.  ARGV: limit, window in microseconds, a unique member.  Returns 0 when
# the submit may go (and counts it), else the microseconds until the oldest leaves.
_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) * 1000000 + tonumber(now[2])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], t, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - t)
"""


class RedisSubmitThrottle:
    """A ``SubmitThrottle`` shared by every process using the same Redis and ``key``: at
    most ``limit`` submits in any ``window`` seconds between them all (the API counts per
    account, not per process). One Lua script per submit on a sorted set, timed by the
    server's clock; submits of one process queue in order. Under the testing switch the
    window shrinks by its time scale.

    When Redis is unreachable, submits are not refused: this process falls back to its own
    window (``SlidingWindowThrottle``) until Redis answers again, saying so once each way.
    ``RedisBackend.submit_throttle`` makes one on the backend's client and prefix; a client
    whose receiver has a ``RedisBackend`` uses that by default.
    """

    def __init__(
        self,
        redis: str | Client,
        *,
        prefix: str = DEFAULT_PREFIX,
        limit: int = DEFAULT_LIMIT,
        window: float = DEFAULT_WINDOW,
        key: str = "throttle",
    ) -> None:
        self._local = SlidingWindowThrottle(limit, window)  # checks limit and window
        self.limit = limit
        self.window = window
        self._owns_client = isinstance(redis, str)
        self._redis, self.url = _plain_client(redis)
        self.key = f"{prefix}{key}"
        self._script = self._redis.register_script(_ACQUIRE)
        self._token = secrets.token_hex(8)
        self._count = 0
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._shared = True

    def __repr__(self) -> str:
        return (
            f"RedisSubmitThrottle(url={self.url!r}, key={self.key!r}, limit={self.limit}, "
            f"window={self.window:g})"
        )

    def _queue(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def acquire(self) -> None:
        async with self._queue():
            while True:
                window_us = max(1, int(self.window * time_scale() * 1_000_000))
                self._count += 1
                try:
                    wait_us = int(
                        await self._script(
                            keys=[self.key],
                            args=[self.limit, window_us, f"{self._token}:{self._count}"],
                        )
                    )
                except (*_UNREACHABLE, RedisError) as exc:
                    if self._shared:
                        self._shared = False
                        log.error(
                            "the shared submit throttle lost Redis at %s (%s): this process "
                            "keeps to the rate on its own meanwhile",
                            self.url,
                            _reason(exc, _password_of(self._redis)),
                        )
                    await self._local.acquire()
                    return
                if not self._shared:
                    self._shared = True
                    log.warning("the shared submit throttle has Redis at %s again", self.url)
                if wait_us <= 0:
                    return
                log.debug("submit queued for %.2f s by the shared throttle", wait_us / 1e6)
                await asyncio.sleep(wait_us / 1_000_000)

    async def aclose(self) -> None:
        if self._owns_client:
            with contextlib.suppress(*_UNREACHABLE):
                await self._redis.aclose()


class _FeedEntry(NamedTuple):
    entry: _Entry
    sid_in_feed: str


def _messages(messages: Any) -> Iterable[tuple[Any, Mapping[Any, Any]]]:
    for message in messages or ():
        raw_id, raw_fields = message
        if raw_fields is None:  # an entry trimmed away while being read
            continue
        if not isinstance(raw_fields, Mapping):  # flat [k, v, k, v] (RESP3 without parsing)
            raw_fields = dict(zip(raw_fields[::2], raw_fields[1::2], strict=True))
        yield raw_id, raw_fields


def _deliver_to(subscribers: Sequence[Subscriber], delivery: Delivery) -> DeliveryResult:
    if not subscribers:
        return DeliveryResult.ACCEPTED  # joining: their replay brings it
    return _best([subscriber.deliver(delivery) for subscriber in subscribers])


def _best(outcomes: Sequence[DeliveryResult]) -> DeliveryResult:
    for wanted in (DeliveryResult.ACCEPTED, DeliveryResult.MISMATCH):
        if wanted in outcomes:
            return wanted
    return DeliveryResult.IGNORED


def _has_hash_tag(prefix: str) -> bool:
    start = prefix.find("{")
    return start >= 0 and prefix.find("}", start + 2) > start


def _connection_kwargs(client: Client) -> dict[str, Any]:
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    return dict(kwargs) if isinstance(kwargs, dict) else {}


def _plain_client(redis: str | Client) -> tuple[Client, str]:
    """The client of a companion (pending store, throttle): made from a URL with socket
    deadlines, or the one given; and how to name it (no password)."""
    if not isinstance(redis, str):
        return redis, _describe(redis)
    url = redact_url(redis)
    try:
        client: Client = aioredis.Redis.from_url(
            redis, socket_timeout=5.0, socket_connect_timeout=2.0
        )
    except ValueError:
        raise ValueError(f"not a Redis URL: {url}") from None
    return client, url


def _describe(client: Client) -> str:
    """A URL naming where ``client`` connects, with no password in it."""
    if isinstance(client, RedisCluster):
        node = client.get_default_node()
        return f"redis-cluster://{node.host}:{node.port}" if node else "redis-cluster://"
    kwargs = _connection_kwargs(client)
    if "path" in kwargs:
        return str(yarl.URL.build(scheme="unix", path=str(kwargs["path"])))
    return str(
        yarl.URL.build(
            scheme="rediss" if kwargs.get("ssl") else "redis",
            user=kwargs.get("username") or None,
            password="***" if kwargs.get("password") else None,
            host=str(kwargs.get("host", "localhost")),
            port=int(kwargs.get("port", 6379)),
            path=f"/{kwargs.get('db', 0)}",
        )
    )


def _password_of(client: Client) -> tuple[str, ...]:
    password = _connection_kwargs(client).get("password")
    return (password,) if isinstance(password, str) and password else ()


def _reason(exc: BaseException, secrets: Sequence[str]) -> str:
    text = str(exc) or type(exc).__name__
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
