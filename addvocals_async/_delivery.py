"""The delivery seam: genuine callbacks travel from the process that received them to
whichever processes await their task.

The receiver is the HTTP edge. Once a callback has passed its checks it becomes a
``Delivery`` (the event and the reference of the callback URL it came through) and is
*published*. Whoever awaits tasks *subscribes*: by task id, or, for a submit whose
answer has not come back yet, by the reference of the callback URL it sent. Nothing
live crosses the seam, only ``Delivery`` values, so a backend over a shared store
(``addvocals_async.redis``) carries them between processes and hosts.

The rules every backend keeps:

- **Claims.** A callback URL belongs to one task. The first genuine task id published
  through a reference claims it; a later callback naming another task through the same
  URL is a ``MISMATCH`` and is refused. The submit's own answer is authoritative and
  overrides an earlier claim (``claim(..., authoritative=True)``).
- **Replay.** Events that arrive while nobody subscribes are kept (bounded) and handed
  to the first subscriber, so a callback that beats the submit's answer, or lands while
  the awaiting process restarts, is not lost.
- **No blocking on the receiver's path.** ``publish`` calls subscribers synchronously in
  this process; subscribers only update state and wake futures.

``InMemoryBackend`` is the default: one process, O(1) dictionaries, fixed memory for
finished tasks.
"""

from __future__ import annotations

import collections
import enum
import time
from typing import NamedTuple, Protocol

from ._models import CallbackEvent

__all__ = [
    "Delivery",
    "DeliveryBackend",
    "DeliveryResult",
    "InMemoryBackend",
    "Subscriber",
]


class Delivery(NamedTuple):
    """A genuine callback: its event, the reference of the URL it arrived through, and
    the size of its body in bytes (what keeping it costs, roughly). ``body`` is the body
    as received, when the receiver has it: a backend that stores callbacks elsewhere
    (Redis) stores it as is rather than serialising the event again."""

    ref: str
    event: CallbackEvent
    size: int = 0
    body: bytes | None = None


class DeliveryResult(enum.Enum):
    """What became of a published callback."""

    ACCEPTED = "accepted"  # moved a task forward, or stored for its awaiting process
    IGNORED = "ignored"  # duplicate, regression, late or unknown type: acknowledged, no effect
    ORPHANED = "orphaned"  # genuine, but nobody awaits the task here: kept for a later subscriber
    MISMATCH = "mismatch"  # the body names another task than the URL belongs to


class Subscriber(Protocol):
    """Receives the deliveries of the tasks it subscribed to."""

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        """Apply ``delivery``: ``ACCEPTED`` when it moved a task, ``IGNORED`` when it did
        not, ``MISMATCH`` when the task takes callbacks only through another URL."""
        ...

    def seam_closed(self) -> None:
        """Nothing more will come through this seam: waiters fall back to polling."""
        ...

    def seam_available(self, available: bool) -> None:
        """The seam's store was lost (``False``: waiters poll meanwhile) or is back
        (``True``: callbacks flow again, and the backend replays what it kept). Called on
        transitions only."""
        ...


class DeliveryBackend(Protocol):
    """The delivery seam. Implementations: ``InMemoryBackend`` (one process, default) and
    ``addvocals_async.redis.RedisBackend`` (many processes and hosts)."""

    async def connect(self) -> None:
        """Check that the seam's store can be reached, at start-up: a clear
        ``DeliveryUnavailableError`` (naming the store, never its password) rather than
        a 503 on the first callback. Nothing to do in memory."""
        ...

    async def claim(self, ref: str, task_id: str, *, authoritative: bool = False) -> str:
        """Record that callback URL ``ref`` belongs to ``task_id``; return its owner (the
        first task id claimed, unless ``authoritative`` overrides it)."""
        ...

    async def owner(self, ref: str) -> str | None:
        """The task id that claimed ``ref``, if any (how an ambiguous submit finds the
        task it created: its callbacks name it)."""
        ...

    async def publish(self, delivery: Delivery) -> DeliveryResult:
        """Claim the delivery's URL for its task (``MISMATCH`` if another task owns it),
        then hand it to the task's subscribers, or keep it for a later one. Raises
        ``DeliveryUnavailableError`` when it cannot store the delivery right now: the
        receiver then answers the sender with a retryable status instead of dropping it."""
        ...

    def subscribe(
        self, subscriber: Subscriber, *, task_id: str | None = None, ref: str | None = None
    ) -> None:
        """Deliver the events of ``task_id`` (or of whatever task claims ``ref``) to
        ``subscriber``, replaying what was kept first."""
        ...

    def unsubscribe(
        self, subscriber: Subscriber, *, task_id: str | None = None, ref: str | None = None
    ) -> None: ...

    async def aclose(self) -> None:
        """Stop delivering; tell every subscriber (``seam_closed``)."""
        ...


class _Generations:
    """A mapping whose entries expire between ``ttl/2`` and ``ttl`` after their last write,
    and which holds at most about ``limit`` entries: two dicts, the older dropped whole
    when the newer one is half a lifetime old or full. O(1) and no per-entry clock, so an
    old entry that keeps being read can never shield later ones from expiry."""

    __slots__ = ("_half", "_limit", "_new", "_old", "_rotated")

    def __init__(self, ttl: float, limit: int) -> None:
        self._half = ttl / 2
        self._limit = max(1, limit // 2)
        self._new: dict[str, object] = {}
        self._old: dict[str, object] = {}
        self._rotated = time.monotonic()

    def _maybe_rotate(self) -> None:
        now = time.monotonic()
        if len(self._new) >= self._limit or now - self._rotated >= self._half:
            self._old = self._new if now - self._rotated < 2 * self._half else {}
            self._new = {}
            self._rotated = now

    def get(self, key: str) -> object | None:
        value = self._new.get(key)
        return self._old.get(key) if value is None else value

    def put(self, key: str, value: object) -> None:
        self._maybe_rotate()
        self._new[key] = value
        self._old.pop(key, None)

    def pop(self, key: str) -> object | None:
        value = self._new.pop(key, None)
        old = self._old.pop(key, None)
        return value if value is not None else old

    def __len__(self) -> int:
        return len(self._new) + len(self._old)

    def __contains__(self, key: str) -> bool:
        return key in self._new or key in self._old


class _KeptEvents:
    """Events of tasks nobody here awaits yet, until a subscriber takes them: bounded in
    tasks, in bytes (a callback body may be a megabyte) and in time. Ordered by last
    write, so the oldest is always first: expiry and eviction take it in O(1)."""

    __slots__ = ("_bytes", "_entries", "max_bytes", "max_tasks", "ttl")

    def __init__(self, *, ttl: float, max_tasks: int, max_bytes: int) -> None:
        self.ttl = ttl
        self.max_tasks = max_tasks
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[str, tuple[float, list[Delivery], int]] = (
            collections.OrderedDict()
        )
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def keep(self, delivery: Delivery, *, per_task: int) -> None:
        task_id = delivery.event.task_id
        now = time.monotonic()
        _, kept, size = self._entries.pop(task_id, (now, [], 0))
        # One of each type (a sender's retries repeat them), and only a few types.
        callback_type = delivery.event.callback_type
        if len(kept) < per_task and all(d.event.callback_type != callback_type for d in kept):
            kept.append(delivery)
            size += delivery.size
            self._bytes += delivery.size
        self._entries[task_id] = (now, kept, size)
        self._trim(now)

    def take(self, task_id: str) -> list[Delivery]:
        entry = self._entries.pop(task_id, None)
        if entry is None:
            return []
        self._bytes -= entry[2]
        return entry[1]

    def _trim(self, now: float) -> None:
        entries = self._entries
        oldest = now - self.ttl
        while entries:
            stamp, _, size = next(iter(entries.values()))
            if stamp >= oldest and len(entries) <= self.max_tasks and self._bytes <= self.max_bytes:
                return
            entries.popitem(last=False)
            self._bytes -= size


class InMemoryBackend:
    """The delivery seam within one process.

    Everything it remembers expires after ``ttl`` seconds and is bounded: the claims of
    recent callback URLs and the ids of tasks that ended here (whose late duplicates are
    ignored) at about ``2 * memory`` entries each; the events of tasks nobody here awaits
    yet at ``memory`` tasks, one event of each known type and at most
    ``orphan_events_per_task`` types each, bodies of at most ``max_kept_event_bytes``
    (a genuine callback's is a few kilobytes), and ``max_kept_bytes`` of bodies in all:
    parsed, a body takes up to about twenty times its size in memory.
    """

    def __init__(
        self,
        *,
        memory: int = 4096,
        orphan_events_per_task: int = 4,
        ttl: float = 6 * 3600,
        max_kept_bytes: int = 4 * 1024 * 1024,
        max_kept_event_bytes: int = 64 * 1024,
    ) -> None:
        self.ttl = ttl
        # ref -> owner task id. Bounded: a live task registered here is also guarded by
        # its registry, which knows the one URL it takes callbacks through.
        self._claims = _Generations(ttl, limit=2 * memory)
        self._kept = _KeptEvents(ttl=ttl, max_tasks=memory, max_bytes=max_kept_bytes)
        self.max_kept_event_bytes = max_kept_event_bytes
        self._finished = _Generations(ttl, limit=2 * memory)  # task ids that ended
        self._orphan_cap = orphan_events_per_task
        self._by_task: dict[str, Subscriber | tuple[Subscriber, ...]] = {}
        self._by_ref: dict[str, Subscriber | tuple[Subscriber, ...]] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"InMemoryBackend(subscriptions={len(self)}, kept={len(self._kept)})"

    def __len__(self) -> int:
        """How many subscriptions are open (0 once every awaited task has finished)."""
        return len(self._by_task) + len(self._by_ref)

    @property
    def closed(self) -> bool:
        return self._closed

    async def connect(self) -> None:
        """Nothing to reach: the seam is this process's memory."""

    async def claim(self, ref: str, task_id: str, *, authoritative: bool = False) -> str:
        owner = self._claims.get(ref)
        if owner is None or (authoritative and owner != task_id):
            self._claims.put(ref, task_id)
            return task_id
        assert isinstance(owner, str)
        return owner

    async def owner(self, ref: str) -> str | None:
        owner = self._claims.get(ref)
        return owner if isinstance(owner, str) else None

    async def publish(self, delivery: Delivery) -> DeliveryResult:
        return self.publish_now(delivery)

    def publish_now(self, delivery: Delivery) -> DeliveryResult:
        """``publish`` without a coroutine: the in-memory seam never waits."""
        event = delivery.event
        task_id = event.task_id
        ref = delivery.ref
        owner = self._claims.get(ref)
        if owner is not None and owner != task_id:
            return DeliveryResult.MISMATCH
        if owner is None:
            self._claims.put(ref, task_id)
        subscribers = self._by_task.get(task_id)
        if subscribers is None:
            subscribers = self._by_ref.get(ref)
        if subscribers is not None:
            result = _deliver_to(subscribers, delivery)
        elif task_id in self._finished:
            # A duplicate or late callback of a task that already ended: not an orphan.
            result = DeliveryResult.IGNORED
        else:
            result = self._keep(delivery)
        if result is DeliveryResult.MISMATCH:
            if owner is None:
                # Refused: it claims nothing (else client.recover() for this URL would
                # name the task the refused body named).
                self._claims.pop(ref)
        elif event.ends_task:
            self._finished.put(task_id, True)
        return result

    def _keep(self, delivery: Delivery) -> DeliveryResult:
        if delivery.event.stage is None or delivery.size > self.max_kept_event_bytes:
            # Unknown types change nothing; a body far beyond a genuine callback's few
            # kilobytes is not worth keeping: the awaiting task's poll covers both.
            return DeliveryResult.IGNORED
        # Kept parsed; the raw body too would only double what an orphan costs.
        kept = Delivery(delivery.ref, delivery.event, delivery.size)
        self._kept.keep(kept, per_task=self._orphan_cap)
        return DeliveryResult.ORPHANED

    def subscribe(
        self, subscriber: Subscriber, *, task_id: str | None = None, ref: str | None = None
    ) -> None:
        if self._closed:
            subscriber.seam_closed()
            return
        if ref is not None:
            _add(self._by_ref, ref, subscriber)
            owner = self._claims.get(ref)
            if isinstance(owner, str) and task_id is None:
                task_id = owner  # already claimed: replay that task's events
        if task_id is not None:
            if ref is None:
                _add(self._by_task, task_id, subscriber)
            for delivery in self._kept.take(task_id):
                subscriber.deliver(delivery)

    def unsubscribe(
        self, subscriber: Subscriber, *, task_id: str | None = None, ref: str | None = None
    ) -> None:
        if task_id is not None:
            _remove(self._by_task, task_id, subscriber)
            if task_id not in self._by_task:
                # Nobody here awaits it any more (it ended, or was given up): its late
                # callbacks are acknowledged and dropped, not kept as orphans.
                self._finished.put(task_id, True)
        if ref is not None:
            _remove(self._by_ref, ref, subscriber)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """``aclose`` without a coroutine."""
        if self._closed:
            return
        self._closed = True
        everyone: dict[int, Subscriber] = {}
        for table in (self._by_task, self._by_ref):
            for entry in table.values():
                for subscriber in entry if isinstance(entry, tuple) else (entry,):
                    everyone[id(subscriber)] = subscriber
            table.clear()
        for subscriber in everyone.values():
            subscriber.seam_closed()


def _deliver_to(
    subscribers: Subscriber | tuple[Subscriber, ...], delivery: Delivery
) -> DeliveryResult:
    if not isinstance(subscribers, tuple):
        return subscribers.deliver(delivery)
    outcomes = [subscriber.deliver(delivery) for subscriber in subscribers]
    for wanted in (DeliveryResult.ACCEPTED, DeliveryResult.MISMATCH):
        if wanted in outcomes:
            return wanted
    return DeliveryResult.IGNORED


def _add(table: dict[str, Subscriber | tuple[Subscriber, ...]], key: str, sub: Subscriber) -> None:
    entry = table.get(key)
    if entry is None or entry is sub:
        table[key] = sub
    elif isinstance(entry, tuple):
        if sub not in entry:
            table[key] = (*entry, sub)
    else:
        table[key] = (entry, sub)


def _remove(
    table: dict[str, Subscriber | tuple[Subscriber, ...]], key: str, sub: Subscriber
) -> None:
    entry = table.get(key)
    if entry is sub:
        del table[key]
    elif isinstance(entry, tuple) and sub in entry:
        rest = tuple(s for s in entry if s is not sub)
        table[key] = rest[0] if len(rest) == 1 else rest
