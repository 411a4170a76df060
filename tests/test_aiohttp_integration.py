"""``addvocals_async.aiohttp``: the receiver mounted in someone else's aiohttp app, served
for real on a loopback port, with a task run through it against the simulator."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from helpers import REQUEST, SECRET

from addvocals_async import AddVocalsClient, CallbackReceiver, PollPolicy, RetryPolicy
from addvocals_async.aiohttp import RECEIVER_KEY, get_receiver, init_app
from addvocals_async.testing import Simulator


async def test_init_app_serves_callbacks_beside_the_apps_own_routes() -> None:
    app = web.Application()

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"accepted": get_receiver(request.app).stats.accepted})

    app.router.add_get("/health", health)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound first: the public URL names its port
    port = sock.getsockname()[1]
    receiver = CallbackReceiver(secret=SECRET, public_url=f"http://127.0.0.1:{port}/hooks")
    assert init_app(app, receiver, path="/hooks") is app
    assert get_receiver(app) is receiver
    assert app[RECEIVER_KEY] is receiver
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        async with (
            Simulator(speed=1000, seed=1) as sim,
            AddVocalsClient(
                sim.api_key,
                base_url=sim.base_url,
                receiver=receiver,
                poll=PollPolicy.fast(),
                retry=RetryPolicy.no_wait(),
            ) as client,
        ):
            task = await client.add_vocals(**REQUEST)
            assert sim.tasks[task.task_id].callback_url.startswith(
                f"http://127.0.0.1:{port}/hooks/cb/"
            )
            result = await task.complete(timeout=5)
            assert result.source == "callback"
            assert len(result.tracks) == 2
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/health") as answer,
            ):
                assert (await answer.json())["accepted"] >= 1
            assert not receiver.closed
    finally:
        await runner.cleanup()
    assert receiver.closed  # it closes with the application


async def test_close_with_app_false_leaves_the_receiver_open() -> None:
    app = web.Application()
    receiver = CallbackReceiver(secret=SECRET, public_url="http://h/x")
    init_app(app, receiver, close_with_app=False)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await runner.cleanup()
    assert not receiver.closed
    await receiver.aclose()


def test_get_receiver_without_init_app_says_what_to_do() -> None:
    with pytest.raises(KeyError, match="init_app"):
        get_receiver(web.Application())
