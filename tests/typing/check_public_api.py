"""Type-checked by mypy --strict in `make typecheck`, never run: the public surface keeps
the types users rely on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from addvocals_async import (
    RECEIVER_KEY,
    AddVocalsClient,
    AddVocalsRequest,
    APIConnectionError,
    CallbackEvent,
    CallbackReceiver,
    PollPolicy,
    ReceiverResponse,
    RetryPolicy,
    Stage,
    TaskDetails,
    TaskFailedError,
    TaskResult,
    TaskTimeoutError,
    Track,
    UncheckedModel,
    VocalTask,
    verify_signature,
)


async def flow(key: str) -> None:
    async with (
        CallbackReceiver(port=0, secret="a-secret-of-enough-length") as receiver,
        AddVocalsClient(key, receiver=receiver, retry=RetryPolicy(), poll=PollPolicy()) as client,
    ):
        url: str = receiver.url
        task: VocalTask = await client.add_vocals(
            upload_url=url, prompt="p", title="t", style="s", negative_tags="n",
            style_weight=0.5, model=UncheckedModel("V9"),
        )  # fmt: skip
        task_id: str = task.task_id
        stage: Stage = task.stage
        result: TaskResult = await task.complete(timeout=10)
        tracks: Sequence[Track] = result.tracks
        for track in tracks:
            path: Path = await client.download(track, Path("out"))
            duration: float | None = track.duration
        async for event in task.events():
            typed_event: CallbackEvent = event
        details: TaskDetails = await client.get_details(task_id)
        credits: int = await client.get_credits()
        again: VocalTask = client.task(task_id)
        request = AddVocalsRequest(
            upload_url=url, prompt="p", title="t", style="s", negative_tags="n"
        )
        await client.add_vocals(request)
        del stage, path, duration, typed_event, details, credits, again


def errors(exc: Exception) -> None:
    if isinstance(exc, TaskFailedError):
        code: int | None = exc.code
        del code
    if isinstance(exc, TaskTimeoutError):
        stage: str = exc.stage
        del stage
    if isinstance(exc, APIConnectionError):
        maybe: bool = exc.maybe_submitted
        del maybe


async def elsewhere(receiver: CallbackReceiver, app: web.Application) -> None:
    receiver.mount(app, path="/hooks")
    mounted: CallbackReceiver = app[RECEIVER_KEY]
    answer: ReceiverResponse = await mounted.handle("/hooks/cb/x", {}, b"{}")
    status: int = answer.status
    verify_signature({"data": {"task_id": "t"}}, {"X-Webhook-Timestamp": "1"}, "key")
    del status
