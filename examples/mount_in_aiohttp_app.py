"""Mount the receiver into an aiohttp application you already run.

Your app keeps its own routes; `init_app` adds `POST /addvocals/cb/{token}`, and the
receiver closes with the app. Don't start a mounted receiver: the app serves its route.
`public_url` is how the API reaches this app (here: the bound address).
"""

import asyncio
import os
import sys

from aiohttp import web

from addvocals_async import AddVocalsClient, CallbackReceiver
from addvocals_async.aiohttp import get_receiver, init_app


async def health(request: web.Request) -> web.Response:
    receiver = get_receiver(request.app)
    return web.json_response({"ok": True, "callbacks": receiver.stats.accepted})


async def main() -> int:
    port = int(os.environ.get("APP_PORT", "8090"))
    public = os.environ.get("ADDVOCALS_PUBLIC_URL", f"http://127.0.0.1:{port}/addvocals")
    app = web.Application()
    app.router.add_get("/health", health)  # the app's own route
    receiver = CallbackReceiver(public_url=public)
    init_app(app, receiver, path="/addvocals")

    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with AddVocalsClient(receiver=receiver) as client:
            task = await client.add_vocals(
                upload_url="https://cdn.example.org/instrumental.mp3",
                prompt="Dreamy layered vocals",
                title="Glass Orchard",
                style="Dream Pop",
                negative_tags="Rap",
            )
            result = await task.complete(timeout=900)
            print(f"{task.task_id}: complete with {len(result.tracks)} tracks")
            print(f"callbacks accepted by the mounted receiver: {receiver.stats.accepted}")
    finally:
        await runner.cleanup()  # also closes the receiver
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
