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

``publish`` is one Lua script (claim check, de-duplication, both ``XADD``, the TTLs): atomic,
one round trip. When this process awaits the task itself the delivery is also applied at
once, without waiting for the feed.

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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias

import yarl

try:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "addvocals_async.redis needs redis-py: pip install 'addvocals_async[redis]'"
    ) from exc

from ._convert import WireFormat, wire
from ._delivery import Delivery, DeliveryResult, Subscriber
from ._errors import DeliveryUnavailableError

__all__ = ["RedisBackend", "redact_url"]

log = logging.getLogger("addvocals_async.redis")

CLOSE_TIMEOUT = 2.0
"""How long ``aclose()`` waits for the reader task to end after cancelling it."""

Client: TypeAlias = "aioredis.Redis | RedisCluster"

DEFAULT_TTL = 6 * 3600
DEFAULT_PREFIX = "addvocals:"

# What "Redis is not there" looks like from redis-py (a restarting server's LOADING answer
# included); anything else is a bug to surface.
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS: claim, events, feed, seq.  ARGV: task id, ref, callback type, body, ttl,
# events per task, feed length.  Returns {"mismatch"}, {"duplicate"} or {"stored", sid}.
_PUBLISH = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return {'mismatch'}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[5])
local mark = ARGV[2] .. '|' .. ARGV[3]
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
  if entry[2][2] == mark then
    return {'duplicate'}
  end
end
local sid = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[6], '*',
  'mark', mark, 'ref', ARGV[2], 'body', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
local n = redis.call('INCR', KEYS[4])
redis.call('EXPIRE', KEYS[4], ARGV[5])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*',
  'task', ARGV[1], 'sid', sid, 'ref', ARGV[2], 'n', n, 'body', ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[5])
return {'stored', sid}
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
    - ``wire_format``: the converter used to store events (default: the package's).
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
        self._publish_script = self._redis.register_script(_PUBLISH)
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

    # ---------------------------------------------------------------- the seam

    async def connect(self) -> None:
        """Check that Redis answers; ``DeliveryUnavailableError`` naming the URL (without
        its password) if not. Optional: every operation connects on its own."""
        await self._call(self._redis.ping())

    async def claim(self, ref: str, task_id: str, *, authoritative: bool = False) -> str:
        key = self.claim_key(ref)
        if authoritative:
            await self._call(self._redis.set(key, task_id, ex=self.ttl))
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
        body = json.dumps(self._wire.unstructure_callback(event), separators=(",", ":"))
        answer = await self._call(
            self._publish_script(
                keys=[
                    self.claim_key(delivery.ref),
                    self.events_key(event.task_id),
                    self._feed_key,
                    self._seq_key,
                ],
                args=[
                    event.task_id,
                    delivery.ref,
                    event.callback_type,
                    body,
                    self.ttl,
                    self.events_per_task,
                    self.feed_length,
                ],
            )
        )
        outcome = _text(answer[0])
        if outcome == "mismatch":
            return DeliveryResult.MISMATCH
        if outcome == "duplicate":
            return DeliveryResult.IGNORED
        # Awaited here too: apply it now rather than when the feed brings it back.
        entry = _Entry(event.task_id, _text(answer[1]), delivery.ref, body)
        local = self._dispatch(entry, delivery)
        # Stored for whichever process awaits the task (perhaps one not started yet).
        return DeliveryResult.ACCEPTED if local is None else local

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
        self._watches.clear()
        self._dirty.clear()
        for subscriber in everyone:
            subscriber.seam_closed()
        if self._owns_client:
            with contextlib.suppress(*_UNREACHABLE):
                await self._redis.aclose()

    # ---------------------------------------------------------------- internals

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
        kwargs = _connection_kwargs(self._redis)
        password = kwargs.get("password")
        return (password,) if isinstance(password, str) and password else ()

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
            event = self._wire.structure_callback(json.loads(entry.body))
        except ValueError:
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
                    if self._dirty:
                        await self._replay()
                    if not self._dirty and not pending.done():
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


def _reason(exc: BaseException, secrets: Sequence[str]) -> str:
    text = str(exc) or type(exc).__name__
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
