"""Helpers shared by the test modules: one definition each.

Import them as ``from helpers import ...`` (``tests/`` is on the path for pytest and mypy).
Fixtures shared the same way live in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import yarl
from aiohttp import web

from addvocals_async import (
    AddVocalsClient,
    CallbackReceiver,
    InMemoryBackend,
    PollPolicy,
    ProviderProfile,
    RetryPolicy,
    TaskRegistry,
    TaskState,
    VocalTask,
)
from addvocals_async._config import TESTING_ENV
from addvocals_async._providers import get_provider
from addvocals_async.testing import Simulator

SECRET = "receiver-secret-for-tests-0123456789"
"""The receivers' secret (keys the callback URL tokens)."""

REQUEST: dict[str, Any] = {
    "upload_url": "https://cdn.example.org/instrumental.mp3",
    "prompt": "A calm piano ballad with soothing vocals",
    "title": "Quiet Harbour",
    "style": "Jazz",
    "negative_tags": "Heavy Metal, Aggressive Vocals",
}
"""The required fields of a submit, as ``add_vocals`` keyword arguments."""

DEAD_CALLBACK = "http://127.0.0.1:9/cb"
"""A callback URL nothing listens on (the discard port): for tasks that are polled."""

QUICK_RETRIES = (20.0, 40.0, 60.0)
"""Callback retry delays for the simulator: 20, 40 and 60 ms apart at speed 1000 (the
documented 1, 5 and 15 minutes would take 1.3 s)."""

TASK = "4d8e0f3a91b27c65e0a4f1d9b3c87e52"
OTHER_TASK = "7e82ee581cec5cc6e587cc02409dab36"
"""Task ids of the API's form (32 hex digits)."""

SUBMIT = "/api/v1/generate/add-vocals"
DETAILS = "/api/v1/generate/record-info"
"""apibox's submit and details paths (a fake API serves them too)."""

NO_DETAILS_LIMIT = None
"""The simulator's per-task details rate limit (3/s) runs in real time, while the testing
switch polls a hundred times as often: a simulator that is only the backdrop of a test
gets no such limit, or each poll burst would stall a wait for a whole second.
``test_simulator`` tests the limit itself."""

CALLBACK = "callback"
POLL = "poll"
"""The ``source`` of a result or event: a callback, or the details endpoint."""


CHILD_TESTING = {TESTING_ENV: "1"}
"""The environment that turns the testing switch on in a child process (the CLI, an
example), as ``conftest.py`` turns it on in this one."""


def request_args(request: Mapping[str, Any] = REQUEST) -> list[str]:
    """``request`` as the CLI's ``submit`` options (``--upload-url URL ...``)."""
    return [arg for key, value in request.items() for arg in (f"--{key.replace('_', '-')}", value)]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def token_of(url: str) -> str:
    """The token at the end of a callback URL."""
    return url.rsplit("/", 1)[1]


EVIL_TRACKS: list[dict[str, Any]] = [
    {
        "id": "evil-track",
        "audio_url": "https://evil.example/owned.mp3",
        "stream_audio_url": "https://evil.example/owned",
        "createTime": 1767268905123,
        "duration": 1.0,
    }
]


def callback(
    task_id: str,
    kind: str = "complete",
    *,
    tracks: Sequence[Mapping[str, Any]] = EVIL_TRACKS,
    **data: Any,
) -> dict[str, Any]:
    """A well-formed callback envelope naming ``task_id`` (by default with an attacker's
    track); ``data`` adds fields beside ``callbackType`` and ``task_id``."""
    inner = {"callbackType": kind, "task_id": task_id, "data": [dict(t) for t in tracks], **data}
    return {"code": 200, "msg": "All generated successfully.", "data": inner}


def callback_bytes(task_id: str, kind: str = "complete", **data: Any) -> bytes:
    """``callback(...)`` as the bytes a sender posts."""
    return json.dumps(callback(task_id, kind, **data)).encode()


def envelope(data: Any, code: int = 200) -> web.Response:
    """An answer of the API: its JSON envelope around ``data``."""
    return web.json_response({"code": code, "msg": "success" if code == 200 else "x", "data": data})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@attrs.define
class FakeApi:
    """Tiny aiohttp apps on 127.0.0.1 playing the API where the simulator cannot misbehave
    the way a test needs (a Retry-After of "²", nested JSON, an answer that never comes)."""

    runners: list[web.AppRunner] = attrs.field(factory=list)
    ended: asyncio.Event = attrs.field(factory=asyncio.Event)

    async def __call__(self, routes: dict[tuple[str, str], Handler]) -> str:
        """Serve ``routes`` (``(method, path) -> handler``); returns the base URL."""
        app = web.Application()
        for (method, path), handler in routes.items():
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def hang(self) -> None:
        """For a handler that must not answer within the test: returns when the test ends,
        so the server's shutdown never waits on a sleeping handler."""
        await self.ended.wait()


def backend_size(receiver: CallbackReceiver) -> int:
    """How many tasks the receiver's in-memory backend still holds."""
    backend = receiver.backend
    assert isinstance(backend, InMemoryBackend)
    return len(backend)


async def event_log(task: VocalTask) -> list[tuple[str, str]]:
    """``(callback_type, source)`` of each event ``task.events()`` yields."""
    return [
        (event.callback_type, str(event.extra.get("source", CALLBACK)))
        async for event in task.events(timeout=5)
    ]


def client_for(
    sim: Simulator,
    receiver: CallbackReceiver | None = None,
    poll: PollPolicy | None = None,
    **kwargs: Any,
) -> AddVocalsClient:
    """A client of ``sim`` that never waits between retries and polls within tenths of a
    second; without a receiver, callbacks go to ``DEAD_CALLBACK``."""
    options: dict[str, Any] = {
        "base_url": sim.base_url,
        "provider": sim.provider,
        "receiver": receiver,
        "callback_url": None if receiver is not None else DEAD_CALLBACK,
        "retry": RetryPolicy.no_wait(),
        "poll": poll or PollPolicy.fast(),
    }
    options.update(kwargs)
    return AddVocalsClient(options.pop("api_key", sim.api_key), **options)


@dataclasses.dataclass
class Env:
    """A simulator, an embedded receiver, a client wired to both, and a plain HTTP session
    for posting to the receiver as anyone might."""

    sim: Simulator
    receiver: CallbackReceiver
    client: AddVocalsClient
    http: aiohttp.ClientSession

    @property
    def details_path(self) -> str:
        return self.client.profile.details_path

    def details_requests(self) -> int:
        return self.sim.count(method="GET", path=self.details_path)

    async def post(
        self, url: str | yarl.URL, body: bytes, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        async with self.http.post(url, data=body, headers=headers) as response:
            return response.status, await response.json()


@contextlib.asynccontextmanager
async def live(
    provider: str = "apibox",
    *,
    poll: PollPolicy | None = None,
    receiver_kwargs: dict[str, Any] | None = None,
    **sim_kwargs: Any,
) -> AsyncIterator[Env]:
    """A simulator (speed 1000, seed 0, no per-task details rate limit unless given), an
    embedded receiver on port 0 and a client wired to both. A simulator without a submit
    rate limit (``rate_limit=None``) gets a client without a submit throttle."""
    sim_kwargs.setdefault("speed", 1000)
    sim_kwargs.setdefault("seed", 0)
    sim_kwargs.setdefault("details_rate_limit", NO_DETAILS_LIMIT)
    unthrottled = "rate_limit" in sim_kwargs and sim_kwargs["rate_limit"] is None
    async with (
        Simulator(provider=provider, **sim_kwargs) as sim,
        CallbackReceiver(secret=SECRET, **(receiver_kwargs or {})) as receiver,
        client_for(sim, receiver, poll, throttle=not unthrottled) as client,
        aiohttp.ClientSession() as http,
    ):
        yield Env(sim, receiver, client, http)


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


MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(413)
"""One MPEG-1 Layer III frame (128 kbit/s, 44.1 kHz: 417 bytes) of silence."""
ID3_HEADER = b"ID3\x04\x00\x00\x00\x00\x00\x00"
"""An empty ID3v2.4 tag: how most MP3 files start."""


def mp3_bytes(size: int = 4_000) -> bytes:
    """A small MP3 of about ``size`` bytes: an ID3 tag, then whole frames, then filler."""
    frames = ID3_HEADER + MP3_FRAME * max(1, (size - len(ID3_HEADER)) // len(MP3_FRAME))
    return (frames + bytes(max(0, size - len(frames))))[:size] if size >= 14 else frames


def write_mp3(path: Path, size: int = 4_000) -> Path:
    """Write an MP3 of exactly ``size`` bytes to ``path`` a megabyte at a time (a 50 MB
    file is never held in memory here); returns ``path``."""
    block = MP3_FRAME * (1024 * 1024 // len(MP3_FRAME))
    with open(path, "wb") as out:
        out.write(ID3_HEADER)
        left = size - len(ID3_HEADER)
        while left > 0:
            out.write(block[:left])
            left -= min(left, len(block))
    return path
