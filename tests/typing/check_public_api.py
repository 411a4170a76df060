"""Type-checked by mypy --strict in `make typecheck`, never run: the public surface keeps
the types users rely on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from aiohttp import web

from addvocals_async import (
    RECEIVER_KEY,
    AddVocalsClient,
    AddVocalsRequest,
    APIConnectionError,
    CallbackEvent,
    CallbackReceiver,
    LocalFileError,
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
    UploadedFile,
    UploadUnavailableError,
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


async def local_files(client: AddVocalsClient, receiver: CallbackReceiver) -> None:
    uploaded: UploadedFile = await client.upload(Path("beat.mp3"), "beat.mp3")
    from_bytes: UploadedFile = await client.upload(b"ID3", progress=lambda sent, total: None)
    with open("beat.mp3", "rb") as file:  # noqa: ASYNC230 - a file object is the point
        from_file: UploadedFile = await client.upload(file)
    fetched: UploadedFile = await client.upload_from_url("https://cdn.example.org/a.mp3")
    url: str = uploaded.url
    expires: datetime | None = uploaded.expires_at
    served: str = receiver.serve_file(Path("beat.mp3"), expires_in=600)
    task: VocalTask = await client.add_vocals(
        audio=Path("beat.mp3"), audio_via="serve", prompt="p", title="t", style="s",
        negative_tags="n",
    )  # fmt: skip
    try:
        await client.upload(Path("x"))
    except LocalFileError as exc:
        reason: str = exc.reason
        del reason
    except UploadUnavailableError as exc:
        provider: str = exc.provider
        del provider
    del from_bytes, from_file, fetched, url, expires, served, task
