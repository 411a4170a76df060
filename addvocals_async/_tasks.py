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
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

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


class _Deadlines:
    """Every waiter's deadline in this event loop, in one heap behind one timer: a wait
    costs a heap entry, not a timer of its own (nor one per task).

    A waiter woken by a change, or cancelled, leaves its entry behind (counted in
    ``stale``); it goes when its time comes, or all at once when stale entries are more
    than half of the heap. Woken by its deadline, a waiter's result is ``_EXPIRED``.
    """

    __slots__ = ("__weakref__", "_armed", "_heap", "_loop", "_seq", "stale")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the loop's timers hold this object, this object never holds the loop.
        self._loop = weakref.ref(loop)
        self._heap: list[tuple[float, int, asyncio.Future[Any]]] = []
        self._seq = 0
        self._armed = math.inf  # the earliest timer set and not yet run
        self.stale = 0

    def add(
        self, loop: asyncio.AbstractEventLoop, when: float, waiter: asyncio.Future[Any]
    ) -> None:
        heap = self._heap
        self._seq += 1
        heapq.heappush(heap, (when, self._seq, waiter))
        if when < self._armed:
            self._armed = when
            loop.call_at(when, self._expire)  # an earlier one left set runs and finds nothing
        if self.stale > 256 and 2 * self.stale > len(heap):
            self._heap = [entry for entry in heap if not entry[2].done()]
            heapq.heapify(self._heap)
            self.stale = 0

    def _expire(self) -> None:
        """Wake the waiters whose deadline passed, ``WAKE_BATCH`` per loop iteration."""
        loop = self._loop()
        if loop is None:  # pragma: no cover - a timer outliving its loop
            return
        now = loop.time()
        if self._armed <= now:
            self._armed = math.inf
        heap = self._heap
        woken = 0
        while heap and heap[0][0] <= now:
            waiter = heapq.heappop(heap)[2]
            if waiter.done():
                self.stale -= 1
                continue
            waiter.set_result(_EXPIRED)
            woken += 1
            if woken >= WAKE_BATCH:  # the rest in the next loop iteration
                self._armed = now
                loop.call_soon(self._expire)
                return
        if heap and heap[0][0] < self._armed:
            self._armed = heap[0][0]
            loop.call_at(self._armed, self._expire)


_deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
    weakref.WeakKeyDictionary()
)


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
        "_on_terminal",
        "_reached",
        "_shared_result",
        "_waiters",
        "_wants",
        "callbacks_expected",
        "failure",
        "last_activity",
        "moved_at",
        "poll_requested",
        "polled_at",
        "profile",
        "quiet_warned",
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
        self.callbacks_expected = callbacks_expected
        self.ref: str | None = None  # the receiver registration routing callbacks here
        self._events: list[CallbackEvent] | None = None
        self._reached: dict[Stage, CallbackEvent] | None = None
        # The last result handed out, with its event: every waiter of a stage gets the
        # same object, so waking 100,000 of them allocates nothing that outlives them
        # (new survivors by the thousand would bring on a full garbage collection).
        self._shared_result: tuple[CallbackEvent, TaskResult] | None = None
        self.failure: TaskFailedError | None = None
        self.last_activity = time.monotonic()  # any callback or poll answer naming the task
        self.moved_at: float | None = None  # when the last accepted event moved it
        self.poll_requested = False
        # When a poll of this task last started or ended, by any of its handles: they
        # share the per-task floor (kie allows 3 requests a second per task).
        self.polled_at: float | None = None
        self.quiet_warned = False
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

    # ---------------------------------------------------------------- transitions

    def apply(self, event: CallbackEvent) -> bool:
        """Apply ``event``; True when it moved the task (and was recorded), False when it
        was a duplicate, a regression, late, unknown or for another task."""
        if self.task_id is None:
            self.task_id = event.task_id  # a callback that beat the submit response
        elif event.task_id != self.task_id:
            return False
        self.last_activity = time.monotonic()
        target = event.stage
        current = self.stage
        if target is None or current.is_terminal:
            return False
        if target is Stage.FAILED:
            self.stage = Stage.FAILED
            self.failure = self._failure_from(event)
        elif target.rank <= current.rank:
            return False
        else:
            # The event that reached each stage (skipped ones included); results are built
            # from it when somebody asks, not on the receiver's hot path.
            if self._reached is None:
                self._reached = {}
            for stage in target.covers:
                self._reached.setdefault(stage, event)
            self.stage = target
        self.moved_at = self.last_activity
        if self._events is None:
            self._events = []
        self._events.append(event)
        self._notify(self.stage.rank)
        if log.isEnabledFor(logging.INFO):
            _log_progress(self, event)
        if self.stage.is_terminal and self._on_terminal is not None:
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
        self.last_activity = time.monotonic()
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
        event = self._reached.get(stage) if self._reached is not None else None
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
        deadlines = _deadlines.get(loop)
        if deadlines is None:
            deadlines = _deadlines[loop] = _Deadlines(loop)
        deadlines.add(loop, loop.time() + timeout, waiter)
        return waiter

    def drop_waiter(self, waiter: asyncio.Future[Any]) -> None:
        waiters = self._waiters
        if waiters is waiter:
            self._waiters = None
        elif isinstance(waiters, dict):
            waiters.pop(waiter, None)
        if waiter.cancelled() or not waiter.done() or waiter.result() is not _EXPIRED:
            # Woken by a change or cancelled: its deadline is left in the heap.
            deadlines = _deadlines.get(waiter.get_loop())
            if deadlines is not None:
                deadlines.stale += 1

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


def _reached(result: TaskResult | None) -> TaskResult:
    assert result is not None  # a wait for a stage returns its result or raises
    return result


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
        "_connection_failures",
        "_last_poll",
        "_policy",
        "_poll_lock",
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
    ) -> None:
        self._state = state
        self._source = source
        self._policy = policy
        # Re-attached by id: it may have finished long ago, or never existed, so the first
        # wait asks the details endpoint at once instead of giving callbacks a grace period.
        self._reattached = reattached
        self._last_poll: float | None = None
        # When the task was submitted, as far as this process knows: the handle is made
        # as the submit answers; a re-attached task's first poll revises it from the stage
        # it has reached. Polls and the grace for late callbacks follow the stage times.
        self._born = time.monotonic()
        self._poll_lock: asyncio.Lock | None = None
        self._connection_failures = 0

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
        grace period yet). For progress displays: nothing polls unless somebody waits."""
        now = time.monotonic()
        if self._listening() and self._late_at() > now:
            return None
        return max(0.0, self._next_poll_at(Stage.COMPLETE.rank) - now)

    async def text(self, timeout: float | None = None) -> TaskResult:
        """Wait for the lyrics stage (satisfied by any later stage, even if it was skipped)."""
        return _reached(await self._wait(Stage.TEXT, *self._deadline(timeout)))

    async def first(self, timeout: float | None = None) -> TaskResult:
        """Wait until the first track is ready (its stream URL plays; the MP3 may not be final)."""
        return _reached(await self._wait(Stage.FIRST, *self._deadline(timeout)))

    async def complete(self, timeout: float | None = None) -> TaskResult:
        """Wait until every track is final; ``result.tracks`` holds them."""
        return _reached(await self._wait(Stage.COMPLETE, *self._deadline(timeout)))

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
        now = self._last_poll = time.monotonic()
        if first_look:
            # Submitted some time ago: at least as long ago as the stage reached takes.
            self._born = now - self._policy.due(state.stage.rank)
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
        deadline = self._deadline(timeout)
        index = 0
        while True:
            while index < len(state.events):
                index += 1
                yield state.events[index - 1]
            if state.stage.is_terminal:
                return
            await self._wait(None, *deadline, seen=len(state.events))

    # ---------------------------------------------------------------- internals

    def _deadline(self, timeout: float | None) -> tuple[float, float]:
        if timeout is None:
            timeout = self._policy.default_timeout
        if not timeout >= 0:  # also refuses NaN, which no deadline would ever reach
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        return time.monotonic() + timeout, timeout

    async def _wait(
        self, stage: Stage | None, until: float, total: float, *, seen: int = 0
    ) -> TaskResult | None:
        """Sleep until ``stage`` is reached (its result), or with no stage until there
        are more than ``seen`` events (``None``); poll when callbacks are quiet, raise
        ``TaskTimeoutError`` at ``until`` (``total`` seconds from the start) after a
        last-chance poll.

        The one waiting loop. It awaits its waiter's future itself: an awaited task holds
        this frame while it sleeps and nothing more (no coroutine per sleep, no closure),
        as memory per awaited task is a figure of ``make bench``."""
        state = self._state
        wants = stage.rank if stage is not None else 0
        expired = False
        while True:
            if stage is None:
                if len(state.events) > seen:
                    return None
            else:
                result = state.result_for(stage)
                if result is not None:
                    return result
            if expired:
                raise TaskTimeoutError(self.task_id, stage.value if stage else "next event", total)
            waiter = self._sleep_or_none(until, wants)
            if waiter is None:
                expired = await self._poll_or_last_chance(until)
                continue
            try:
                await waiter
            finally:
                state.drop_waiter(waiter)

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
            if self._last_poll is not None and now - self._last_poll < self._policy.poll_floor:
                return  # a poll just happened, perhaps another waiter's: it was applied
            shared = state.polled_at
            if shared is not None and now - shared < self._policy.poll_floor:
                # Another handle of the task (``client.task(id)`` again) polled, or is
                # polling: its answer is applied to the state they share.
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
