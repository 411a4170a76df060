"""Per-task state: a one-way stage machine fed by callbacks and polls, and ``VocalTask``.

``TaskState`` is pure bookkeeping (no I/O, no asyncio tasks): a callback or a poll result
is turned into a ``CallbackEvent`` and applied; the stage only moves forward, failure is
terminal, and everything else (duplicates, regressions, late and unknown events) is ignored.
A waiting coroutine sleeps on a future of its own (``TaskState.wait_changed``), made only
while it waits, so 100,000 pending tasks cost a few small objects each.

``VocalTask`` is what users hold. Its waits run in the caller's own task: they sleep until
a callback arrives, and when callbacks go quiet (or no receiver is attached) they poll the
details endpoint, at most once per ``PollPolicy.min_interval`` per task, and once more
before a deadline expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ._config import PollPolicy
from ._errors import (
    AddVocalsError,
    APIConnectionError,
    AuthenticationError,
    NotFoundError,
    ReceiverClosedError,
    TaskFailedError,
    TaskTimeoutError,
)
from ._models import CallbackEvent, Stage, TaskDetails, TaskResult, Track
from ._providers import ProviderProfile

__all__ = ["DetailsSource", "TaskState", "VocalTask", "event_from_details"]

log = logging.getLogger("addvocals_async.tasks")


class DetailsSource(Protocol):
    """Where a task asks for its details when callbacks go quiet (the client's API)."""

    @property
    def can_poll(self) -> bool:
        """False once nothing can be asked any more (the client is closed)."""
        ...

    async def details(self, task_id: str, *, attempts: int | None = None) -> TaskDetails:
        """What the details endpoint says now; ``attempts`` bounds its retries."""
        ...


def event_from_details(details: TaskDetails) -> CallbackEvent | None:
    """The event a poll result stands for, so that a poll resolves a task exactly as the
    matching callback would. ``None`` when the status says nothing new (pending, unknown)."""
    stage = details.stage
    if stage is None or stage is Stage.PENDING:
        return None
    extra = {"source": "poll", "status": details.status}
    if stage is Stage.FAILED:
        code = details.error_code if details.error_code is not None else 0
        msg = details.error_message or f"the task ended with status {details.status}"
        return CallbackEvent(
            task_id=details.task_id, callback_type="error", code=code, msg=msg, extra=extra
        )
    return CallbackEvent(
        task_id=details.task_id,
        callback_type=stage.value,  # a callback's type is the name of its stage
        code=200,
        msg=details.status,
        tracks=details.tracks,
        extra=extra,
    )


WAKE_BATCH = 128
"""Waiters woken per loop iteration: each then runs a step of its own coroutine."""


_EXPIRED = True
"""A waiter's result when its deadline woke it (a change wakes it with ``None``)."""
_ANY_CHANGE = 1 << 30
"""``_notify``'s rank for a change that is not a stage: it wakes every waiter."""


_TICKS = 1000
"""Deadlines are kept to the millisecond (rounded up): waiters due in the same one share
an entry."""


_RANKS = {stage: stage.rank for stage in Stage}
_TERMINAL = frozenset(stage for stage in Stage if stage.is_terminal)
"""``Stage.rank`` and ``Stage.is_terminal`` as lookups, for ``TaskState.apply``: the
receiver's hot path."""

_EXPECTED, _POLL_REQUESTED, _QUIET_WARNED = 1, 2, 4
"""``TaskState._flags``: callbacks expected, a poll requested, the quiet warning given."""


class _Deadlines:
    """Every waiter's deadline in this event loop, behind one timer: not a timer per
    waiter, nor a heap entry (a tuple, a sequence number and a float: 120 bytes each).

    Deadlines are rounded up to the millisecond: ``_due`` maps one to its waiter, or to
    the list of its waiters when there are more (a slot each), and ``_times`` is the heap
    of those milliseconds. A waiter woken by a change, or cancelled, leaves its place
    behind (counted in ``stale``); it goes when its time comes, or all at once when stale
    places are more than half of them. Woken by its deadline, a waiter's result is
    ``_EXPIRED``.
    """

    __slots__ = ("__weakref__", "_armed", "_count", "_due", "_loop", "_times", "stale")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the loop's timers hold this object, this object never holds the loop.
        self._loop = weakref.ref(loop)
        self._due: dict[float, asyncio.Future[Any] | list[asyncio.Future[Any]]] = {}
        self._times: list[float] = []  # a heap of the keys of _due
        self._count = 0  # waiters held, stale ones included
        self._armed = math.inf  # the earliest timer set and not yet run
        self.stale = 0

    def __len__(self) -> int:
        """How many waiters are held (stale ones included)."""
        return self._count

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop()

    def add(
        self, loop: asyncio.AbstractEventLoop, when: float, waiter: asyncio.Future[Any]
    ) -> None:
        # The next millisecond; an endless wait (timeout=math.inf) as one in 30,000 years.
        due = (int(min(when, 1e12) * _TICKS) + 1) / _TICKS
        held = self._due.get(due)
        if held is None:
            self._due[due] = waiter
            heapq.heappush(self._times, due)
            if due < self._armed:
                self._armed = due
                loop.call_at(due, self._expire)  # an earlier one left set runs and finds nothing
        elif isinstance(held, list):
            held.append(waiter)
        else:
            self._due[due] = [held, waiter]
        self._count += 1
        if self.stale > 256 and 2 * self.stale > self._count:
            self._compact()

    def _compact(self) -> None:
        """Drop the places of waiters already done."""
        due: dict[float, asyncio.Future[Any] | list[asyncio.Future[Any]]] = {}
        count = 0
        for when, held in self._due.items():
            if isinstance(held, list):
                live = [waiter for waiter in held if not waiter.done()]
                if live:
                    due[when] = live
                    count += len(live)
            elif not held.done():
                due[when] = held
                count += 1
        self._due = due
        self._times = list(due)
        heapq.heapify(self._times)
        self._count = count
        self.stale = 0

    def _expire(self) -> None:
        """Wake the waiters whose deadline passed, ``WAKE_BATCH`` per loop iteration."""
        loop = self._loop()
        if loop is None:  # pragma: no cover - a timer outliving its loop
            return
        now = loop.time()
        if self._armed <= now:
            self._armed = math.inf
        times, due = self._times, self._due
        budget = WAKE_BATCH
        while times and times[0] <= now:
            if budget <= 0:  # the rest in the next loop iteration
                self._armed = now
                loop.call_soon(self._expire)
                return
            held = due[times[0]]
            if not isinstance(held, list):
                held = [held]
            while held and budget > 0:
                waiter = held.pop()
                self._count -= 1
                if waiter.done():
                    self.stale -= 1
                    continue
                waiter.set_result(_EXPIRED)
                budget -= 1
            if held:
                due[times[0]] = held
            else:
                del due[heapq.heappop(times)]
        if times and times[0] < self._armed:
            self._armed = times[0]
            loop.call_at(self._armed, self._expire)


_deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
    weakref.WeakKeyDictionary()
)


_clock = -math.inf


def _activity_clock() -> float:
    """``time.monotonic()`` to the millisecond, for ``TaskState.last_activity`` (a grace
    period of seconds, a sweep of hours): states made or moved in the same millisecond
    share one float, not 24 bytes each (a burst of submits, ``client.resume()``)."""
    global _clock
    now = time.monotonic()
    if now - _clock >= 0.001:
        _clock = now
    return _clock


_latest: _Deadlines | None = None
"""The deadlines of the loop that last asked (looked up without making a weak reference)."""


def _deadlines_for(loop: asyncio.AbstractEventLoop) -> _Deadlines:
    global _latest
    deadlines = _latest
    if deadlines is not None and deadlines.loop is loop:
        return deadlines
    deadlines = _deadlines.get(loop)
    if deadlines is None:
        deadlines = _deadlines[loop] = _Deadlines(loop)
    _latest = deadlines
    return deadlines


def _wake_all(waiters: list[asyncio.Future[None]], start: int = 0) -> None:
    end = start + WAKE_BATCH
    for waiter in waiters[start:end]:
        if not waiter.done():
            waiter.set_result(None)
    if end < len(waiters):
        asyncio.get_running_loop().call_soon(_wake_all, waiters, end)


def _log_progress(state: TaskState, event: CallbackEvent) -> None:
    source = event.extra.get("source", "callback")
    if state.stage is Stage.COMPLETE:
        log.info("task %a complete: %d tracks (by %s)", state.task_id, len(event.tracks), source)
    elif state.stage is Stage.FAILED:
        log.info("task %a failed with code %s (by %s)", state.task_id, event.code, source)
    else:
        log.debug("task %a reached %s (by %s)", state.task_id, state.stage.value, source)


class TaskState:
    """The stage machine of one task. Applying events is synchronous and never blocks."""

    # A pending task is a handful of pointers: its lists and dicts are made only once an
    # event arrives, so 100,000 tasks waiting for callbacks stay cheap.
    __slots__ = (
        "_events",
        "_flags",
        "_on_terminal",
        "_shared_result",
        "_waiters",
        "_wants",
        "failure",
        "last_activity",
        "moved_at",
        "polled_at",
        "profile",
        "ref",
        "stage",
        "task_id",
    )

    def __init__(
        self,
        task_id: str | None,
        profile: ProviderProfile,
        *,
        callbacks_expected: bool = False,
    ) -> None:
        self.task_id = task_id
        self.profile = profile
        self.stage = Stage.PENDING
        # callbacks_expected, poll_requested and quiet_warned, as bits of one int.
        self._flags = _EXPECTED if callbacks_expected else 0
        self.ref: str | None = None  # the receiver registration routing callbacks here
        # The accepted events, in order: each moved the task forward, or failed it.
        self._events: list[CallbackEvent] | None = None
        # The last result handed out, with its event: every waiter of a stage gets the
        # same object, so waking 100,000 of them allocates nothing that outlives them
        # (new survivors by the thousand would bring on a full garbage collection).
        self._shared_result: tuple[CallbackEvent, TaskResult] | None = None
        self.failure: TaskFailedError | None = None
        self.last_activity = _activity_clock()  # any callback or poll answer naming it
        self.moved_at: float | None = None  # when the last accepted event moved it
        # When a poll of this task last started or ended, by any of its handles: they
        # share the per-task floor (kie allows 3 requests a second per task).
        self.polled_at: float | None = None
        # None, the one waiter's future (the stage rank it waits for in ``_wants``), or
        # {future: rank} when there are more.
        self._waiters: asyncio.Future[Any] | dict[asyncio.Future[Any], int] | None = None
        self._wants = 0
        self._on_terminal: Callable[[TaskState], None] | None = None

    def __repr__(self) -> str:
        return f"TaskState(task_id={self.task_id!r}, stage={self.stage.value})"

    @property
    def events(self) -> list[CallbackEvent]:
        """The accepted events, in arrival order."""
        return self._events if self._events is not None else []

    @property
    def callbacks_expected(self) -> bool:
        """True while callbacks reach this task (a receiver attached): waiters stay quiet
        for the grace period instead of polling."""
        return bool(self._flags & _EXPECTED)

    @callbacks_expected.setter
    def callbacks_expected(self, value: bool) -> None:
        self._flags = self._flags | _EXPECTED if value else self._flags & ~_EXPECTED

    @property
    def poll_requested(self) -> bool:
        """True when waiters should poll as soon as the per-task floor allows."""
        return bool(self._flags & _POLL_REQUESTED)

    @poll_requested.setter
    def poll_requested(self, value: bool) -> None:
        self._flags = self._flags | _POLL_REQUESTED if value else self._flags & ~_POLL_REQUESTED

    @property
    def quiet_warned(self) -> bool:
        """True once the warning that no callback came was logged for this task."""
        return bool(self._flags & _QUIET_WARNED)

    @quiet_warned.setter
    def quiet_warned(self, value: bool) -> None:
        self._flags = self._flags | _QUIET_WARNED if value else self._flags & ~_QUIET_WARNED

    # ---------------------------------------------------------------- transitions

    def apply(self, event: CallbackEvent) -> bool:
        """Apply ``event``; True when it moved the task (and was recorded), False when it
        was a duplicate, a regression, late, unknown or for another task."""
        if self.task_id is None:
            self.task_id = event.task_id  # a callback that beat the submit response
        elif event.task_id != self.task_id:
            return False
        self.last_activity = _activity_clock()
        target = event.stage
        current = self.stage
        if target is None or current in _TERMINAL:
            return False
        if target is Stage.FAILED:
            self.stage = Stage.FAILED
            self.failure = self._failure_from(event)
        elif _RANKS[target] <= _RANKS[current]:
            return False
        else:
            # Results are built from the event that reached a stage when somebody asks
            # (``result_for``), not on the receiver's hot path.
            self.stage = target
        self.moved_at = self.last_activity
        if self._events is None:
            self._events = []
        self._events.append(event)
        self._notify(_RANKS[target])
        if log.isEnabledFor(logging.INFO):
            _log_progress(self, event)
        if target in _TERMINAL and self._on_terminal is not None:
            callback, self._on_terminal = self._on_terminal, None
            callback(self)
        return True

    def _result(self, event: CallbackEvent) -> TaskResult:
        """The result ``event`` stands for. An event without tracks (``text``, or a poll of
        a young task) carries the latest tracks that arrived before it."""
        tracks: Sequence[Track] = event.tracks
        if not tracks:
            before = False
            for earlier in reversed(self.events):
                if earlier is event:
                    before = True
                elif before and earlier.tracks:
                    tracks = earlier.tracks
                    break
        stage = event.stage
        assert stage is not None
        return TaskResult(
            task_id=event.task_id,
            stage=stage,
            tracks=tracks,
            code=event.code,
            msg=event.msg,
            source=str(event.extra.get("source", "callback")),
        )

    def _failure_from(self, event: CallbackEvent) -> TaskFailedError:
        status = event.extra.get("status")
        return TaskFailedError(
            event.task_id,
            event.code,
            event.msg,  # the API's words, verbatim; the provider's reading apart
            status=status if isinstance(status, str) else None,
            meaning=self.profile.describe_callback_code(event.code),
        )

    def request_poll(self) -> None:
        """Something says the task moved, through a channel not trusted with its content
        (a callback on a URL not proven to be this task's): waiters poll as soon as the
        per-task floor (``PollPolicy.min_interval``) allows, not the polling schedule."""
        self.poll_requested = True
        self._notify()

    def stop_expecting_callbacks(self) -> None:
        """The receiver went away: wake the waiters so they poll from now on."""
        self.callbacks_expected = False
        self._notify()

    def expect_callbacks(self) -> None:
        """Callbacks flow again (the seam's store is back): waiters stop polling and give
        them a fresh grace period."""
        self.callbacks_expected = True
        self.last_activity = _activity_clock()
        self._notify()

    def on_terminal(self, callback: Callable[[TaskState], None] | None) -> None:
        """Run ``callback`` once when the task reaches a terminal stage (the registry's
        clean-up hook); at once if it already has."""
        if callback is not None and self.stage.is_terminal:
            callback(self)
        else:
            self._on_terminal = callback

    # ---------------------------------------------------------------- waiting

    def result_for(self, stage: Stage) -> TaskResult | None:
        """The result once ``stage`` (or a later one) was reached; raises the task's
        ``TaskFailedError`` when it failed before reaching it."""
        # The first event whose stage covers ``stage`` reached it (skipped ones included).
        event = None
        for accepted in self._events or ():
            target = accepted.stage
            if target is not None and stage in target.covers:
                event = accepted
                break
        if event is not None:
            shared = self._shared_result
            if shared is not None and shared[0] is event:
                return shared[1]
            result = self._result(event)
            self._shared_result = (event, result)
            return result
        if self.failure is not None:
            raise self.failure
        return None

    async def wait_changed(self, timeout: float) -> None:
        """Sleep until the next change of this task, or ``timeout`` seconds.

        Each waiter sleeps on a future of its own (kept alone, or in a set when there are
        more), so one that leaves (timed out, cancelled) does so in O(1): many waiters
        sharing one future through ``asyncio.wait`` each scan its callback list to leave,
        O(W²) when thousands time out together. Deadlines share one heap and one timer per
        event loop (``_Deadlines``), and wake-ups, from a change or a deadline, go out in
        batches of ``WAKE_BATCH`` per loop iteration, so 100,000 waiters never stall the
        loop for the receiver.
        """
        waiter = self.add_waiter(timeout)
        try:
            await waiter
        finally:
            self.drop_waiter(waiter)

    def add_waiter(self, timeout: float, wants: int = 0) -> asyncio.Future[Any]:
        """``wait_changed`` in two halves, for a waiting loop that awaits the future
        itself (one coroutine less per waiter): the future to await, resolved at the
        next change or in ``timeout`` seconds; ``drop_waiter`` it when it is done.

        ``wants``, a stage rank: only a stage of that rank or more (or failure) wakes
        it, and any change that is not a stage (a poll requested, the receiver gone or
        back). A task awaited with ``complete()`` sleeps through ``text`` and ``first``.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        waiters = self._waiters
        if waiters is None:
            self._waiters, self._wants = waiter, wants
        elif isinstance(waiters, dict):
            waiters[waiter] = wants
        else:
            self._waiters = {waiters: self._wants, waiter: wants}
        _deadlines_for(loop).add(loop, loop.time() + timeout, waiter)
        return waiter

    def drop_waiter(self, waiter: asyncio.Future[Any]) -> None:
        waiters = self._waiters
        if waiters is waiter:
            self._waiters = None
        elif isinstance(waiters, dict):
            waiters.pop(waiter, None)
        if waiter.cancelled() or not waiter.done() or waiter.result() is not _EXPIRED:
            # Woken by a change or cancelled: its deadline is left in the heap.
            _deadlines_for(waiter.get_loop()).stale += 1

    def _lowest_wants(self) -> int | None:
        """The lowest stage rank a waiter now sleeps for (0: any change), or ``None``
        when nobody waits."""
        waiters = self._waiters
        if waiters is None:
            return None
        if isinstance(waiters, dict):
            return min(waiters.values(), default=None)
        return self._wants

    def _notify(self, rank: int = _ANY_CHANGE) -> None:
        """Wake the waiters a change of stage ``rank`` concerns (all, by default)."""
        waiters = self._waiters
        if waiters is None:
            return
        if isinstance(waiters, dict):
            woken = [waiter for waiter, wants in waiters.items() if wants <= rank]
            if len(woken) == len(waiters):
                self._waiters = None
            else:
                for waiter in woken:
                    del waiters[waiter]
            _wake_all(woken)
        elif self._wants <= rank:
            self._waiters = None
            if not waiters.done():
                waiters.set_result(None)


class _Wait(Coroutine[Any, Any, Any]):
    """One wait of a ``VocalTask`` (``text()``, ``first()``, ``complete()``, a step of
    ``events()``): the waiting loop as a coroutine object of its own, not a coroutine
    frame. An awaited task holds this (six pointers), its waiter's future and a slot in
    the loop's deadlines while it sleeps, and nothing more: memory per awaited task is a
    figure of ``make bench``, and a native coroutine frame (two, with the public method's
    own) took three times as much.

    It yields its waiter's future to the task that runs it, as ``await future`` would,
    so a callback's ``set_result`` resumes that task in one loop iteration. A poll runs as
    a native coroutine, made only when one is due, which this one drives while it lasts.
    ``stage`` ``None``: the wait ends once there are more than ``seen`` events (``None``).
    """

    __slots__ = ("_busy", "_stage", "_task", "_total", "_until")

    def __init__(
        self,
        task: VocalTask,
        stage: Stage | None,
        total: float,
        until: float | None = None,
        seen: int = 0,
    ) -> None:
        self._task = task
        # The stage waited for, or the number of events seen (a wait for the next one).
        self._stage: Stage | int = seen if stage is None else stage
        self._total = total  # the wait's timeout, for the error
        self._until = until  # its deadline on the monotonic clock, set at the first step
        # None; the waiter's future while it sleeps; the poll's coroutine while it polls;
        # True once the deadline passed (a last look, then TaskTimeoutError).
        self._busy: asyncio.Future[Any] | Coroutine[Any, Any, bool] | bool | None = None

    def __repr__(self) -> str:
        return f"<wait for {self._what()} of {self._task!r}>"

    @property
    def __name__(self) -> str:
        """What asyncio shows for a task running this wait."""
        stage = self._stage
        return "VocalTask.events" if isinstance(stage, int) else f"VocalTask.{stage.value}"

    def _what(self) -> str:
        stage = self._stage
        return "next event" if isinstance(stage, int) else stage.value

    def __await__(self) -> Generator[Any, None, Any]:
        return self  # type: ignore[return-value]  # the iterator protocol, by hand

    def send(self, value: Any = None) -> Any:
        """Resume: after the waiter's future is done, or a step of the poll."""
        busy = self._busy
        if busy is not None and busy is not True:
            if isinstance(busy, asyncio.Future):
                self._busy = None
                self._task._state.drop_waiter(busy)
            else:
                assert not isinstance(busy, bool)
                try:
                    return busy.send(value)
                except StopIteration as stop:
                    self._busy = True if stop.value else None
                except BaseException:
                    self._busy = None
                    raise
        return self._step()

    __next__ = send

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        """Cancelled (or an exception thrown in): leave the waiter's place, or let the
        poll's coroutine handle it, then raise it."""
        if isinstance(typ, BaseException):
            exc = typ
        elif isinstance(val, BaseException):
            exc = val
        else:
            exc = typ() if val is None else typ(val)
        if tb is not None:
            exc = exc.with_traceback(tb)
        if self._until is None:
            self._until = 0.0  # thrown in before its first step: ended, not forgotten
        busy, self._busy = self._busy, None
        if isinstance(busy, asyncio.Future):
            self._task._state.drop_waiter(busy)
        elif busy is not None and busy is not True:
            assert not isinstance(busy, bool)
            self._busy = busy
            try:
                return busy.throw(exc)
            except StopIteration as stop:  # the poll caught it and finished
                self._busy = True if stop.value else None
                return self._step()
            except BaseException:
                self._busy = None
                raise
        try:
            raise exc
        finally:
            # Else this frame would hold the exception whose traceback holds this frame:
            # a reference cycle per cancelled wait, left for the garbage collector.
            del exc, typ, val, tb

    def __del__(self) -> None:
        # As a native coroutine does: a wait made and never awaited is a bug worth a word.
        if self._until is None:
            warnings.warn(
                f"coroutine '{self.__name__}' was never awaited", RuntimeWarning, stacklevel=1
            )

    def close(self) -> None:
        if self._until is None:
            self._until = 0.0  # closed unstarted: nothing to warn about
        busy, self._busy = self._busy, None
        if isinstance(busy, asyncio.Future):
            self._task._state.drop_waiter(busy)
        elif busy is not None and busy is not True:
            assert not isinstance(busy, bool)
            busy.close()

    def _step(self) -> Any:
        """The waiting loop: return what to yield to the task (the waiter's future, or
        the poll's first step), or end with the result (``StopIteration``) or an error."""
        task = self._task
        state = task._state
        stage = self._stage
        until = self._until
        if until is None:
            until = self._until = time.monotonic() + self._total
        while True:
            if isinstance(stage, int):
                if len(state.events) > stage:
                    raise StopIteration(None)
            else:
                result = state.result_for(stage)
                if result is not None:
                    raise StopIteration(result)
            if self._busy is True:
                raise TaskTimeoutError(task.task_id, self._what(), self._total)
            waiter = task._sleep_or_none(until, 0 if isinstance(stage, int) else stage.rank)
            if waiter is not None:
                self._busy = waiter
                waiter._asyncio_future_blocking = True  # what `await waiter` sets
                return waiter
            poll = task._poll_or_last_chance(until)
            try:
                step = poll.send(None)
            except StopIteration as stop:
                self._busy = True if stop.value else None
                continue
            self._busy = poll
            return step


class _Polls:
    """A ``VocalTask``'s polling state, made by its first poll."""

    __slots__ = ("connection_failures", "last_poll", "lock")

    def __init__(self) -> None:
        self.last_poll: float | None = None
        self.lock: asyncio.Lock | None = None
        self.connection_failures = 0


class VocalTask:
    """A submitted add-vocals task. Await its stages; never write a polling loop.

    ``await task.text()``, ``await task.first()`` and ``await task.complete()`` return a
    ``TaskResult`` once that stage (or a later one) is reached, raise ``TaskFailedError``
    when the task failed first, and ``TaskTimeoutError`` at their deadline. A later stage
    satisfies every earlier wait (``complete`` satisfies ``text()``), so skipped stages
    never leave a waiter behind.
    """

    __slots__ = (
        "__weakref__",  # the registry forgets a re-attached task once its handles are gone
        "_born",
        "_policy",
        "_polls",
        "_reattached",
        "_source",
        "_state",
    )

    def __init__(
        self,
        state: TaskState,
        source: DetailsSource,
        policy: PollPolicy,
        *,
        reattached: bool = False,
        age: float = 0.0,
    ) -> None:
        self._state = state
        self._source = source
        self._policy = policy
        # Re-attached by id: it may have finished long ago, or never existed, so the first
        # wait asks the details endpoint at once instead of giving callbacks a grace period.
        self._reattached = reattached
        # When the task was submitted, as far as this process knows: the handle is made
        # as the submit answers; a re-attached task's first poll revises it from the stage
        # it has reached. Polls and the grace for late callbacks follow the stage times.
        # (To the millisecond: handles made in one burst share the float.)
        self._born = _activity_clock() if not age > 0 else time.monotonic() - age
        # What its polls need (last poll, interval, lock, failures in a row), made by the
        # first poll: a task whose callbacks come in time never polls.
        self._polls: _Polls | None = None

    @property
    def _last_poll(self) -> float | None:
        return self._polls.last_poll if self._polls is not None else None

    @_last_poll.setter
    def _last_poll(self, value: float | None) -> None:
        self._polls_made().last_poll = value

    @property
    def _poll_lock(self) -> asyncio.Lock | None:
        return self._polls.lock if self._polls is not None else None

    @_poll_lock.setter
    def _poll_lock(self, value: asyncio.Lock | None) -> None:
        self._polls_made().lock = value

    @property
    def _connection_failures(self) -> int:
        return self._polls.connection_failures if self._polls is not None else 0

    @_connection_failures.setter
    def _connection_failures(self, value: int) -> None:
        self._polls_made().connection_failures = value

    def _polls_made(self) -> _Polls:
        polls = self._polls
        if polls is None:
            polls = self._polls = _Polls()
        return polls

    def __repr__(self) -> str:
        shown = repr(self.task_id) if self.task_id_known else "<not known yet>"
        return f"VocalTask(task_id={shown}, stage={self.stage.value!r})"

    @property
    def task_id(self) -> str:
        """The task's id; ``""`` only for a resumed submit whose answer was lost, until
        its first callback names the task (``task.task_id_known``)."""
        return self._state.task_id or ""

    @property
    def task_id_known(self) -> bool:
        return self._state.task_id is not None

    @property
    def stage(self) -> Stage:
        """The stage reached so far; always current (callbacks update it as they land)."""
        return self._state.stage

    @property
    def failure(self) -> TaskFailedError | None:
        return self._state.failure

    @property
    def next_poll_in(self) -> float | None:
        """Seconds until a waiter of this task next asks the details endpoint (0: at once),
        or ``None`` while it waits for callbacks (a receiver attached, not quiet for the
        grace period yet). For progress displays: nothing polls unless somebody waits.
        The schedule is that of the waiter awaiting the nearest stage (``events()``, as
        the command line follows a task, awaits the next one; ``complete()`` the last),
        or of a ``complete()`` while nobody waits."""
        now = time.monotonic()
        if self._listening() and self._late_at() > now:
            return None
        wants = self._state._lowest_wants()
        target = Stage.COMPLETE.rank if wants is None else wants
        return max(0.0, self._next_poll_at(target) - now)

    # The waits are coroutines (``await``, ``asyncio.create_task``, ``asyncio.wait_for``
    # take them) made by plain methods: one small object per wait (``_Wait``), no frame.
    # Type checkers see coroutine methods, as they were: ``asyncio.gather``'s overloads
    # infer what they return, which mypy does not for a method typed as returning a
    # ``Coroutine``.
    if TYPE_CHECKING:

        async def text(self, timeout: float | None = None) -> TaskResult: ...

        async def first(self, timeout: float | None = None) -> TaskResult: ...

        async def complete(self, timeout: float | None = None) -> TaskResult: ...

    else:

        def text(self, timeout: float | None = None) -> Coroutine[Any, Any, TaskResult]:
            """Wait for the lyrics stage (satisfied by any later stage, even if it was
            skipped)."""
            return _Wait(self, Stage.TEXT, self._timeout(timeout))

        def first(self, timeout: float | None = None) -> Coroutine[Any, Any, TaskResult]:
            """Wait until the first track is ready (its stream URL plays; the MP3 may not
            be final)."""
            return _Wait(self, Stage.FIRST, self._timeout(timeout))

        def complete(self, timeout: float | None = None) -> Coroutine[Any, Any, TaskResult]:
            """Wait until every track is final; ``result.tracks`` holds them."""
            return _Wait(self, Stage.COMPLETE, self._timeout(timeout))

    async def refresh(self) -> TaskDetails:
        """Ask the details endpoint now and apply what it says; returns the details."""
        return await self._refresh(attempts=None)

    async def _refresh(self, *, attempts: int | None) -> TaskDetails:
        state = self._state
        first_look = self._reattached and self._last_poll is None
        state.poll_requested = False  # a request during this poll asks for another
        details = await self._source.details(self.task_id, attempts=attempts)
        event = event_from_details(details)
        moved = event is not None and state.apply(event)
        now = self._last_poll = state.polled_at = time.monotonic()
        if first_look:
            # Submitted some time ago: at least as long ago as the stage reached takes.
            self._born = min(self._born, now - self._policy.due(state.stage.rank))
        elif (
            moved
            and state.callbacks_expected
            and not state.quiet_warned
            and all(e.extra.get("source") == "poll" for e in state.events)
        ):
            self._warn_quiet()
        return details

    async def events(self, timeout: float | None = None) -> AsyncIterator[CallbackEvent]:
        """Each accepted event once, in arrival order, ending after the terminal one.

        Events found by polling carry ``extra["source"] == "poll"``. ``timeout`` bounds the
        whole iteration (``PollPolicy.default_timeout`` when not given).
        """
        state = self._state
        total = self._timeout(timeout)
        until = time.monotonic() + total
        index = 0
        while True:
            while index < len(state.events):
                index += 1
                yield state.events[index - 1]
            if state.stage.is_terminal:
                return
            await _Wait(self, None, total, until, len(state.events))

    # ---------------------------------------------------------------- internals

    def _timeout(self, timeout: float | None) -> float:
        if timeout is None:
            timeout = self._policy.default_timeout
        if not timeout >= 0:  # also refuses NaN, which no deadline would ever reach
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        return timeout

    def _sleep_or_none(self, until: float, wants: int) -> asyncio.Future[Any] | None:
        """The future to sleep on (a change, or the time to poll or to give up), or
        ``None`` when it is time to poll now, or the deadline has passed. ``wants``: the
        stage rank that ends the wait (0: any change does)."""
        state = self._state
        now = time.monotonic()
        remaining = until - now
        if remaining <= 0:
            return None
        if self._listening():
            # Callbacks bring each stage on time: stay quiet until the one due next is
            # late, then check once; past the last stage's, poll on the schedule.
            sleep = self._late_at() - now
            if sleep <= 0:
                sleep = self._next_poll_at(wants) - now
        else:
            sleep = self._next_poll_at(wants) - now
        if sleep > 0:
            return state.add_waiter(min(sleep, remaining), wants)
        if not self._can_poll():
            if not state.callbacks_expected:
                raise ReceiverClosedError(
                    f"task {self.task_id}: the receiver and the client are both closed, "
                    "so nothing can deliver the result"
                )
            # Callbacks can still arrive: wait for them until the deadline.
            return state.add_waiter(remaining, wants)
        return None

    async def _poll_or_last_chance(self, until: float) -> bool:
        """Poll now; True when the deadline has passed (after a last-chance poll)."""
        remaining = until - time.monotonic()
        if remaining <= 0:
            # The last chance, bounded as a whole: waiting for another waiter's poll to
            # finish counts against it too.
            if self._can_poll():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._poll(), self._policy.final_poll_timeout)
            return True
        # A poll (its retries and backoff included) must not outlast the deadline; if
        # the deadline comes first, the loop goes on to the last-chance poll.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._poll(), remaining)
        return False

    def _warn_quiet(self) -> None:
        """Once per task: callbacks were expected, yet a poll found a stage that not one
        callback brought, which looks exactly like a slow API unless somebody says so."""
        state = self._state
        state.quiet_warned = True
        log.warning(
            "no callback for task %a, yet polling found it at stage %s: polling the "
            "details endpoint instead. Is the receiver's public_url reachable from the "
            "internet? (`addvocals doctor --public-url URL` or "
            "`await receiver.check_reachable()` tests it)",
            self.task_id,
            state.stage.value,
        )

    def _can_poll(self) -> bool:
        # A task whose id no answer or callback has named yet cannot be asked about.
        return self._state.task_id is not None and self._source.can_poll

    def _listening(self) -> bool:
        """True while callbacks are trusted to bring the next stage: a receiver is
        attached, no callback asked for a poll, and this is not a re-attached task's
        first look."""
        state = self._state
        return (
            state.callbacks_expected
            and not state.poll_requested
            and not (self._reattached and self._last_poll is None)
        )

    def _since(self) -> float:
        """The submit's time as the stages seen so far tell it: a stage whose callback
        came later than usual moves the times the next ones are due by as much. (A poll
        finds a stage some time after it was reached: that says nothing so precise.)"""
        state = self._state
        moved_at, events = state.moved_at, state.events
        if moved_at is None or not events or events[-1].extra.get("source") == "poll":
            return self._born
        return max(self._born, moved_at - self._policy.due(state.stage.rank))

    def _late_at(self) -> float:
        """When the next stage's callback is late enough for one poll to check: the next
        stage's lateness not yet checked by a poll (a skipped stage costs one poll), or
        ``-inf`` once even the last stage's is (from then on, the poll schedule)."""
        since = self._since()
        last_poll = self._last_poll
        for rank in range(self._state.stage.rank + 1, Stage.COMPLETE.rank + 1):
            at = since + self._policy.late(rank)
            if last_poll is None or last_poll < at:
                return at
        return -math.inf

    def _next_poll_at(self, wants: int) -> float:
        """When a waiter for the stage of rank ``wants`` (0: the next stage) polls next:
        densely around the time that stage is due, sparsely away from it; soon after a
        callback asked for a poll; at once for a re-attached task never polled."""
        state = self._state
        policy = self._policy
        last = self._last_poll
        if state.poll_requested:
            # A callback naming the task asked for a poll: only the per-task floor
            # applies, not the schedule.
            return -math.inf if last is None else last + policy.poll_floor
        if last is None:
            if self._reattached:
                return -math.inf
            last = self._born  # the submit was the last request
        since = self._since()
        target = max(wants, state.stage.rank + 1)
        # The jitter (±10 %) spreads the polls of tasks submitted together; drawn from the
        # last poll's time, it stays the same however often this is asked.
        jitter = 0.9 + 0.2 * ((hash(last) * 2654435761) % 1009) / 1009
        return last + policy.interval(last - since, policy.due(target), jitter)

    async def _poll(self) -> None:
        """One poll of the details endpoint, shared by every waiter of this task. Errors
        are logged and swallowed (a transient poll failure never fails a wait), except a
        rejected API key, which no amount of waiting fixes, and "not found" for a task
        re-attached by id that was never seen: most likely a wrong id."""
        if not self._can_poll():
            return
        if self._poll_lock is None:
            self._poll_lock = asyncio.Lock()
        state = self._state
        async with self._poll_lock:
            now = time.monotonic()
            shared = state.polled_at
            if shared is not None and now - shared < self._policy.poll_floor:
                # A poll just happened, another waiter's or another handle's of the task
                # (``client.task(id)`` again): its answer is applied to the shared state.
                self._last_poll = shared
                return
            state.polled_at = now
            log.debug("polling task %a", self.task_id)
            try:
                # One attempt: a failed poll is retried by the poll schedule itself, not
                # by a burst of requests against an API that just said "slow down".
                await self._refresh(attempts=1)
            except AuthenticationError:
                raise
            except NotFoundError:
                if self._reattached and not self._state.events:
                    raise
                log.info("poll of task %a: not found yet, will retry", self.task_id)
            except APIConnectionError as exc:
                self._unreachable(exc)
            except (AddVocalsError, asyncio.TimeoutError) as exc:
                self._connection_failures = 0  # the API answered, if not as hoped
                log.info("poll of task %a failed, will retry: %a", self.task_id, str(exc))
            else:
                self._connection_failures = 0
            finally:
                self._last_poll = state.polled_at = time.monotonic()

    def _unreachable(self, exc: APIConnectionError) -> None:
        """A poll that did not reach the API. One is transient; ``unreachable_after`` in a
        row is an outage or a wrong base URL, said once per task at WARNING (and, with
        ``give_up_unreachable``, the end of the wait)."""
        self._connection_failures += 1
        failures = self._connection_failures
        limit = self._policy.unreachable_after
        if failures < limit:
            log.info("poll of task %a failed, will retry: %a", self.task_id, str(exc))
            return
        if self._policy.give_up_unreachable:
            raise APIConnectionError(
                f"the API is unreachable: {failures} polls of task {self.task_id} in a row "
                f"failed ({exc}); the task may still finish: check the base URL and the "
                "network, then wait again",
                task_id=self.task_id,
            ) from exc
        if failures == limit:
            log.warning(
                "task %a: %d polls in a row could not reach the API (%s); still waiting, "
                "check the base URL and the network",
                self.task_id,
                failures,
                str(exc),
            )
        else:
            log.info("poll of task %a failed, will retry: %a", self.task_id, str(exc))
