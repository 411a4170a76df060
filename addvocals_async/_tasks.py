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
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from ._config import PollPolicy
from ._errors import (
    AddVocalsError,
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
        "_deadlines",
        "_events",
        "_on_terminal",
        "_reached",
        "_timer",
        "_timer_at",
        "_waiters",
        "callbacks_expected",
        "failure",
        "last_activity",
        "poll_requested",
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
        self.failure: TaskFailedError | None = None
        self.last_activity = time.monotonic()
        self.poll_requested = False
        self.quiet_warned = False
        self._waiters: set[asyncio.Future[None]] | None = None
        self._deadlines: list[tuple[float, int, asyncio.Future[None]]] | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0
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
        if self._events is None:
            self._events = []
        self._events.append(event)
        self._notify()
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
        poll schedule allows."""
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
            return self._result(event)
        if self.failure is not None:
            raise self.failure
        return None

    async def wait_changed(self, timeout: float) -> None:
        """Sleep until the next change of this task, or ``timeout`` seconds.

        Each waiter sleeps on a future of its own, kept in a set, so one that leaves
        (timed out, cancelled) does so in O(1): many waiters sharing one future through
        ``asyncio.wait`` each scan its callback list to leave, O(W²) when thousands time
        out together. Deadlines share one timer per task (a heap), and wake-ups, from a
        change or a deadline, go out in batches of ``WAKE_BATCH`` per loop iteration, so
        100,000 waiters never stall the loop for the receiver.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = set()
        waiters.add(waiter)
        when = loop.time() + timeout
        deadlines = self._deadlines
        if deadlines is None:
            deadlines = self._deadlines = []
        heapq.heappush(deadlines, (when, id(waiter), waiter))
        if self._timer is None or when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = loop.call_at(when, self._expire), when
        try:
            await waiter
        finally:
            waiters.discard(waiter)

    def _expire(self) -> None:
        """The timer: wake the waiters whose deadline passed, a batch at a time."""
        self._timer = None
        deadlines = self._deadlines
        if not deadlines:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        woken = 0
        while deadlines and deadlines[0][0] <= now:
            waiter = heapq.heappop(deadlines)[2]
            if not waiter.done():
                waiter.set_result(None)
                woken += 1
                if woken >= WAKE_BATCH:  # the rest in the next loop iteration
                    self._timer, self._timer_at = loop.call_soon(self._expire), now
                    return
        if deadlines:
            when = deadlines[0][0]
            self._timer, self._timer_at = loop.call_at(when, self._expire), when

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, None
        if waiters:
            # Every waiter with a deadline is in ``waiters``: woken now, their deadlines
            # are all spent.
            self._deadlines = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            _wake_all(list(waiters))


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
        "_last_poll",
        "_policy",
        "_poll_interval",
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
        self._poll_interval: float | None = None
        self._poll_lock: asyncio.Lock | None = None

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

    async def text(self, timeout: float | None = None) -> TaskResult:
        """Wait for the lyrics stage (satisfied by any later stage, even if it was skipped)."""
        return await self._wait_stage(Stage.TEXT, timeout)

    async def first(self, timeout: float | None = None) -> TaskResult:
        """Wait until the first track is ready (its stream URL plays; the MP3 may not be final)."""
        return await self._wait_stage(Stage.FIRST, timeout)

    async def complete(self, timeout: float | None = None) -> TaskResult:
        """Wait until every track is final; ``result.tracks`` holds them."""
        return await self._wait_stage(Stage.COMPLETE, timeout)

    async def refresh(self) -> TaskDetails:
        """Ask the details endpoint now and apply what it says; returns the details."""
        return await self._refresh(attempts=None)

    async def _refresh(self, *, attempts: int | None) -> TaskDetails:
        self._state.poll_requested = False  # a request during this poll asks for another
        details = await self._source.details(self.task_id, attempts=attempts)
        event = event_from_details(details)
        if event is not None:
            self._state.apply(event)
        self._last_poll = time.monotonic()
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
            seen = len(state.events)

            def arrived(seen: int = seen) -> bool:
                return len(state.events) > seen

            await self._wait_until(arrived, deadline, "next event", timeout)

    # ---------------------------------------------------------------- internals

    def _deadline(self, timeout: float | None) -> tuple[float, float]:
        if timeout is None:
            timeout = self._policy.default_timeout
        if not timeout >= 0:  # also refuses NaN, which no deadline would ever reach
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        return time.monotonic() + timeout, timeout

    async def _wait_stage(self, stage: Stage, timeout: float | None) -> TaskResult:
        state = self._state
        deadline = self._deadline(timeout)

        def reached() -> bool:
            return state.result_for(stage) is not None

        await self._wait_until(reached, deadline, stage.value, timeout)
        result = state.result_for(stage)
        assert result is not None
        return result

    async def _wait_until(
        self,
        done: Callable[[], bool],
        deadline: tuple[float, float],
        what: str,
        timeout: float | None,
    ) -> None:
        """Sleep until ``done()``, polling when callbacks are quiet; raise at the deadline."""
        state = self._state
        policy = self._policy
        until, total = deadline
        while not done():
            now = time.monotonic()
            remaining = until - now
            if remaining <= 0:
                # The last chance, bounded as a whole: waiting for another waiter's poll
                # to finish counts against it too.
                if self._can_poll():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._poll(), policy.final_poll_timeout)
                if done():
                    return
                raise TaskTimeoutError(self.task_id, what, total)
            if (
                state.callbacks_expected
                and not state.poll_requested
                and not (self._reattached and self._last_poll is None)
            ):
                # Callbacks flowing: stay quiet. Silent for `grace`: poll on the schedule.
                quiet_for = now - state.last_activity
                grace = policy.grace_period
                sleep = max(grace - quiet_for, self._time_to_next_poll(now))
                if quiet_for >= grace and not state.events and not state.quiet_warned:
                    self._warn_quiet(grace)
            else:
                sleep = self._time_to_next_poll(now)
            if sleep > 0:
                await state.wait_changed(min(sleep, remaining))
                continue
            if not self._can_poll():
                if not state.callbacks_expected:
                    raise ReceiverClosedError(
                        f"task {self.task_id}: the receiver and the client are both closed, "
                        "so nothing can deliver the result"
                    )
                # Callbacks can still arrive: wait for them until the deadline.
                await state.wait_changed(remaining)
                continue
            # A poll (its retries and backoff included) must not outlast the deadline; if
            # the deadline comes first, the loop goes on to the last-chance poll.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._poll(), remaining)

    def _warn_quiet(self, grace: float) -> None:
        """Once per task: callbacks were expected and not one came within the grace period,
        which looks exactly like a slow API unless somebody says so."""
        self._state.quiet_warned = True
        log.warning(
            "no callback for task %a within %.1f s: polling the details endpoint instead. "
            "Is the receiver's public_url reachable from the internet? "
            "(`addvocals doctor --public-url URL` or `await receiver.check_reachable()` "
            "tests it)",
            self.task_id,
            grace,
        )

    def _can_poll(self) -> bool:
        # A task whose id no answer or callback has named yet cannot be asked about.
        return self._state.task_id is not None and self._source.can_poll

    def _time_to_next_poll(self, now: float) -> float:
        if self._last_poll is None:
            return 0.0
        interval = self._poll_interval or 0.0
        interval = max(interval, self._policy.poll_floor)
        return self._last_poll + interval - now

    async def _poll(self) -> None:
        """One poll of the details endpoint, shared by every waiter of this task. Errors
        are logged and swallowed (a transient poll failure never fails a wait), except a
        rejected API key, which no amount of waiting fixes, and "not found" for a task
        re-attached by id that was never seen: most likely a wrong id."""
        if not self._can_poll():
            return
        if self._poll_lock is None:
            self._poll_lock = asyncio.Lock()
        async with self._poll_lock:
            now = time.monotonic()
            if self._last_poll is not None and now - self._last_poll < self._policy.poll_floor:
                return  # a poll just happened, perhaps another waiter's: it was applied
            self._poll_interval = self._policy.next_interval(self._poll_interval)
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
            except (AddVocalsError, asyncio.TimeoutError) as exc:
                log.info("poll of task %a failed, will retry: %a", self.task_id, str(exc))
            finally:
                self._last_poll = time.monotonic()
