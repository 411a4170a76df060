"""The live tasks of one client, fed by the delivery seam.

A ``TaskRegistry`` holds the ``TaskState`` of every task this client awaits and is the
seam's subscriber for them: a submit in flight is known by the reference of the callback
URL it sent (its callbacks may beat the answer), a submitted or re-attached task by its
id. It forgets a task when it ends, tells its terminal listeners (a list: the pending
store, metrics, …), and sweeps tasks nobody has heard of for ``ttl`` seconds, whose
waiters, if any, go on by polling.

A task re-attached by ``client.task(id)`` is held for its handles only: the registry keeps
a weak reference to each, and once the last one is garbage (nobody can wait on it any
more, since a waiting coroutine holds its handle) the task is forgotten at once, not after
the ``ttl``. A callback for it then finds nothing here, like any unknown task's.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import weakref
from collections.abc import Callable

from ._delivery import Delivery, DeliveryBackend, DeliveryResult
from ._providers import ProviderProfile
from ._tasks import TaskState

__all__ = ["TaskRegistry", "TerminalListener"]

log = logging.getLogger("addvocals_async.tasks")

TerminalListener = Callable[[TaskState], None]
"""Called once with a task's state when it completes or fails."""

DEFAULT_TTL = 6 * 3600.0
ENDED_MEMORY = 1024
"""Ended tasks of unanswered submits kept for ``client.recover()``."""


class TaskRegistry:
    """Per-process bookkeeping of awaited tasks; see the module docstring."""

    def __init__(
        self,
        backend: DeliveryBackend | None,
        profile: ProviderProfile,
        *,
        ttl: float = DEFAULT_TTL,
    ) -> None:
        self._backend = backend
        self._profile = profile
        self.ttl = ttl
        self._by_task: dict[str, TaskState] = {}
        self._by_ref: dict[str, TaskState] = {}  # submits whose answer has not come back
        # Submits whose answer never came and whose task ended before anyone asked:
        # client.recover() finds them here (bounded, most recent kept).
        self._ended_by_ref: collections.OrderedDict[str, TaskState] = collections.OrderedDict()
        self.terminal_listeners: list[TerminalListener] = []
        self._on_terminal = self._finished  # bound once, shared by every task
        self._seam_open = backend is not None
        self._next_sweep = time.monotonic() + ttl / 8
        # Tasks held only by their handles (client.task(id)): how many are alive.
        self._handles: dict[TaskState, int] = {}
        # Weak references to those handles; a dead one is queued in _dropped and its state
        # forgotten at the next call here or on the loop, never inside the collector.
        self._handle_refs: dict[weakref.ref[object], TaskState] = {}
        self._dropped: list[weakref.ref[object]] = []
        self._release_scheduled = False

    def __len__(self) -> int:
        """How many tasks are awaited here (0 once all have ended)."""
        self._release_dropped()
        return len(self._by_task) + len(self._by_ref)

    def __repr__(self) -> str:
        return f"TaskRegistry(tasks={len(self)})"

    @property
    def receives_callbacks(self) -> bool:
        return self._seam_open

    # ---------------------------------------------------------------- tracking

    def expect(self, ref: str) -> TaskState:
        """A state for a submit about to be sent with callback URL ``ref``: its callbacks
        reach it from now on, even before the submit returns."""
        self._release_dropped()
        self._maybe_sweep()
        state = TaskState(None, self._profile, callbacks_expected=self._seam_open)
        state.ref = ref
        if self._backend is not None and self._seam_open:
            self._by_ref[ref] = state
            state.on_terminal(self._on_terminal)
            self._backend.subscribe(self, ref=ref)
        return state

    async def bind(self, state: TaskState, task_id: str) -> TaskState:
        """The submit answered ``task_id``: route by id from now on. The answer is
        authoritative over an early callback that named another task; that callback's
        state is then set aside and a fresh one returned."""
        ref = state.ref
        if state.task_id is not None and state.task_id != task_id:
            log.warning(
                "a callback for task %a reached the URL of task %a before its submit "
                "returned; it was set aside",
                state.task_id,
                task_id,
            )
            self.abandon(state)
            state = TaskState(task_id, self._profile, callbacks_expected=self._seam_open)
            state.ref = ref
        state.task_id = task_id
        self._handles.pop(state, None)  # a submit's own task: held until it ends
        backend = self._backend
        if backend is None or ref is None or not self._seam_open:
            return state
        await backend.claim(ref, task_id, authoritative=True)
        if not self.receives_callbacks:  # the seam closed while the claim was on its way
            return state
        if not state.stage.is_terminal:
            # Subscribed by id before the URL's subscription ends: nothing falls between.
            self._by_task[task_id] = state
            state.on_terminal(self._on_terminal)
            backend.subscribe(self, task_id=task_id)
        if self._by_ref.get(ref) is state:
            del self._by_ref[ref]
            backend.unsubscribe(self, ref=ref)
        return state

    def live_elsewhere(self, task_id: str, ref: str) -> bool:
        """True when ``task_id`` is awaited here through another callback URL: then a
        callback naming it through ``ref`` cannot be that URL's own task."""
        state = self._by_task.get(task_id)
        return state is not None and state.ref is not None and state.ref != ref

    def awaiting(self, ref: str) -> TaskState:
        """The state of the submit sent with callback URL ``ref`` whose answer was lost:
        its callbacks name the task. Made afresh (and subscribed) if none is kept here."""
        state = self._by_ref.get(ref)
        if state is None:
            state = self._ended_by_ref.get(ref)
        return state if state is not None else self.expect(ref)

    def abandon(self, state: TaskState) -> None:
        """The submit failed: stop routing its URL's callbacks here."""
        ref = state.ref
        if ref is not None and self._by_ref.get(ref) is state:
            del self._by_ref[ref]
            state.on_terminal(None)
            if self._backend is not None:
                self._backend.unsubscribe(self, ref=ref)

    def attach(
        self, task_id: str, *, ref: str | None = None, handles_only: bool = False
    ) -> TaskState:
        """The state of a task submitted earlier (another process, before a restart), to
        which callbacks naming it are routed. One state per task id. ``ref``, when known
        (from the pending store), is the one callback URL the task takes callbacks
        through; without it, the first genuine URL that names the task becomes its own.

        ``handles_only``: the task is held for the handles given to ``held_by`` and
        forgotten once they are all gone (``client.task(id)``); otherwise it is held until
        it ends or the sweep (a task resumed from the pending store)."""
        self._release_dropped()
        self._maybe_sweep()
        state = self._by_task.get(task_id)
        if state is not None:
            if not handles_only:
                self._handles.pop(state, None)  # held for good from now on
            return state
        state = TaskState(task_id, self._profile, callbacks_expected=self._seam_open)
        state.ref = ref
        if self._backend is not None and self._seam_open:
            self._by_task[task_id] = state
            state.on_terminal(self._on_terminal)
            self._backend.subscribe(self, task_id=task_id)
            if handles_only:
                self._handles[state] = 0
        return state

    def held_by(self, state: TaskState, handle: object) -> None:
        """``handle`` (a ``VocalTask``) waits on ``state``: a task attached with
        ``handles_only`` is kept while any of its handles is alive."""
        if state in self._handles:
            self._handles[state] += 1
            self._handle_refs[weakref.ref(handle, self._handle_gone)] = state

    def _handle_gone(self, ref: weakref.ref[object]) -> None:
        # Called by the garbage collector, at any point of any code (an insertion into
        # _handle_refs included): only queue the reference, touch no dict.
        self._dropped.append(ref)
        if not self._release_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop: released at the next call here
            self._release_scheduled = True
            loop.call_soon(self._release_dropped)

    def _release_dropped(self) -> None:
        """Forget the tasks whose last handle is gone."""
        self._release_scheduled = False
        if not self._dropped:
            return
        dropped, self._dropped = self._dropped, []
        for ref in dropped:
            state = self._handle_refs.pop(ref, None)
            if state is None:
                continue
            count = self._handles.get(state)
            if count is None:
                continue  # ended, swept, or held for good meanwhile
            if count > 1:
                self._handles[state] = count - 1
                continue
            del self._handles[state]
            state.on_terminal(None)
            self._forget(state)

    # ---------------------------------------------------------------- the seam's side

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        event = delivery.event
        state = self._by_task.get(event.task_id)
        if state is None:
            state = self._by_ref.get(delivery.ref)
        if state is None:
            return DeliveryResult.IGNORED
        if state.ref is None:
            # A task re-attached by id with no URL of its own on record: a genuine token
            # proves the URL is one of ours, not that it is this task's (another task's
            # old URL would do). Its content is not trusted; it only asks for a poll,
            # whose answer is the API's own.
            if event.stage is not None and not state.stage.is_terminal:
                state.request_poll()
            return DeliveryResult.IGNORED
        if state.ref != delivery.ref:
            return DeliveryResult.MISMATCH  # another task's URL, even an old one
        return DeliveryResult.ACCEPTED if state.apply(event) else DeliveryResult.IGNORED

    def seam_available(self, available: bool) -> None:
        self._seam_open = available
        for state in {*self._by_task.values(), *self._by_ref.values()}:
            if available:
                state.expect_callbacks()
            else:
                state.stop_expecting_callbacks()

    def seam_closed(self) -> None:
        self._seam_open = False
        states = {*self._by_task.values(), *self._by_ref.values()}
        self._by_task.clear()
        self._by_ref.clear()
        self._handles.clear()
        self._handle_refs.clear()
        self._dropped.clear()
        for state in states:
            state.on_terminal(None)
            state.stop_expecting_callbacks()

    # ---------------------------------------------------------------- clean-up

    def _finished(self, state: TaskState) -> None:
        self._forget(state)
        for listener in self.terminal_listeners:
            try:
                listener(state)
            except Exception:
                log.exception("a terminal listener failed for task %a", state.task_id)

    def _forget(self, state: TaskState) -> None:
        backend = self._backend
        task_id, ref = state.task_id, state.ref
        self._handles.pop(state, None)
        if task_id is not None and self._by_task.get(task_id) is state:
            del self._by_task[task_id]
            if backend is not None:
                backend.unsubscribe(self, task_id=task_id)
        if ref is not None and self._by_ref.get(ref) is state:
            del self._by_ref[ref]
            if backend is not None:
                backend.unsubscribe(self, ref=ref)
            if state.stage.is_terminal and state.task_id is not None:
                ended = self._ended_by_ref
                ended[ref] = state
                if len(ended) > ENDED_MEMORY:
                    ended.popitem(last=False)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.ttl / 8
            self.sweep(now=now)

    def sweep(self, *, now: float | None = None) -> int:
        """Forget every task silent for longer than ``ttl``; its waiters go on by polling.
        Returns how many were forgotten. Runs by itself every ``ttl / 8`` as tasks come."""
        limit = (time.monotonic() if now is None else now) - self.ttl
        stale = [
            state
            for table in (self._by_task, self._by_ref)
            for state in table.values()
            if state.last_activity < limit
        ]
        for state in stale:
            state.on_terminal(None)
            self._forget(state)
            state.stop_expecting_callbacks()
        return len(stale)
