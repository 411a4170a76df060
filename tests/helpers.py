"""Helpers shared by the test modules."""

from __future__ import annotations

from addvocals_async import CallbackReceiver, ProviderProfile, TaskRegistry, TaskState
from addvocals_async._providers import get_provider


async def registered(
    receiver: CallbackReceiver,
    task_id: str | None = None,
    *,
    profile: ProviderProfile | None = None,
    registry: TaskRegistry | None = None,
) -> tuple[TaskState, str]:
    """A task awaited through ``receiver``'s seam as a client's submit makes one: a fresh
    callback URL, registered before sending, then bound to ``task_id`` (the submit's
    answer) when one is given. Returns the task's state and its callback URL."""
    if registry is None:
        registry = TaskRegistry(receiver.backend, profile or get_provider("apibox"))
    fresh = receiver.new_callback_url()
    state = registry.expect(fresh.ref)
    if task_id is not None:
        state = await registry.bind(state, task_id)
    return state, fresh.url
