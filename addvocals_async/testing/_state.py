"""What the simulator's parts share: the knobs a test may turn mid-run, and the records.

The routes, the lifecycle clock and the callback sender each read these at the moment they
act, so ``sim.credits = 0`` or ``sim.maintenance = True`` takes effect on the next request
or callback. Keeping them in one plain object handed down to every part, instead of each
part reaching back into ``Simulator``, lets the parts be read and tested alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Literal

import attrs
import yarl

from .._providers import ProviderProfile
from ._records import Delivery, RecordedRequest, SimTask
from ._scenarios import StageTimes
from ._wire import CreateTimeMode, format_create_time

__all__ = ["Background", "SimState", "logger"]

logger = logging.getLogger("addvocals_async.testing")


@attrs.define(eq=False, repr=False)
class SimState:
    """The provider, the time scale, every tunable behaviour and what was recorded.

    The field meanings are documented on ``Simulator``, which exposes each of them under
    the same name.
    """

    profile: ProviderProfile
    speed: float
    credits: int
    task_cost: int
    rate_limit: tuple[int, float] | None
    details_rate_limit: int | None
    callback_timeout: float
    min_callback_timeout: float
    retry_delays: tuple[float, ...]
    stage_times: StageTimes
    create_time: CreateTimeMode
    error_data: Literal["null", "empty_list"]
    error_status: Literal["ok", "mirror"]
    legacy_details: bool
    young_details_null: int
    retention_days: float
    include_source_fields: bool
    hang_seconds: float
    allow_remote_callbacks: bool
    fetch_upload_url: bool = True
    scale_rate_limits: bool = False
    maintenance: bool = False
    base_url: yarl.URL | None = None
    requests: list[RecordedRequest] = attrs.Factory(list)
    deliveries: list[Delivery] = attrs.Factory(list)
    tasks: dict[str, SimTask] = attrs.Factory(dict)
    _create_time_flip: bool = attrs.field(default=False, init=False)

    def scaled(self, real_seconds: float) -> float:
        """A duration of the real API on the simulated clock."""
        return real_seconds / self.speed

    def rate_window(self, real_seconds: float) -> float:
        """A rate-limit window: real time, or scaled with ``scale_rate_limits``."""
        return self.scaled(real_seconds) if self.scale_rate_limits else real_seconds

    def create_time_value(self, task: SimTask) -> str | int:
        """``createTime`` for the next message carrying ``task``'s tracks; ``alternate``
        switches form from one such message to the next (callback or record-info alike),
        starting with epoch ms."""
        when = task.tracks[0].create_time
        if self.create_time == "alternate":
            self._create_time_flip = not self._create_time_flip
            return format_create_time(when, epoch_ms=self._create_time_flip)
        return format_create_time(when, epoch_ms=self.create_time == "epoch_ms")


class Background:
    """The simulator's own asyncio tasks (lifecycles, retries): tracked so that
    ``wait_idle`` can wait for them and ``close`` can cancel them, and so that a crash in
    one is logged instead of vanishing."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = asyncio.Event()
        """Set when the simulator starts closing: held answers stop waiting."""

    @property
    def closed(self) -> bool:
        return self.closing.is_set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` as a tracked task; dropped unstarted once closing began."""
        if self.closed:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def pending(self) -> set[asyncio.Task[None]]:
        """The tracked tasks still running."""
        return {task for task in self._tasks if not task.done()}

    async def cancel_all(self) -> None:
        """Mark closing, cancel every tracked task and wait until they have ended."""
        self.closing.set()
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("simulator task %s failed", task.get_name(), exc_info=task.exception())
