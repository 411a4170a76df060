"""Route callbacks from another web framework (Starlette here; FastAPI is the same).

`addvocals_async.starlette.callback_route(receiver)` is the route `POST /hooks/cb/{token}`
(the path of the public URL); behind it `receiver.handle_token(token, headers, body)` does
every check (token, size, JSON, signature) and returns the status and JSON body to answer.
The receiver itself serves nothing: it is never started. For a framework without an
integration, write that route yourself: `answer = await receiver.handle(path, headers,
body)`, then answer `answer.status` with the body `answer.json()`.
Needs `pip install 'addvocals_async[starlette]' uvicorn` (both are in the dev extra).
"""

import asyncio
import os
import sys

import uvicorn
from starlette.applications import Starlette

from addvocals_async import AddVocalsClient, CallbackReceiver
from addvocals_async.starlette import callback_route

PORT = int(os.environ.get("APP_PORT", "8091"))
receiver = CallbackReceiver(
    public_url=os.environ.get("ADDVOCALS_PUBLIC_URL", f"http://127.0.0.1:{PORT}/hooks")
)

app = Starlette(routes=[callback_route(receiver)])  # POST /hooks/cb/{token}


async def main() -> int:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=PORT, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
        await asyncio.sleep(0.01)
    try:
        async with AddVocalsClient(receiver=receiver) as client:
            task = await client.add_vocals(
                upload_url="https://cdn.example.org/instrumental.mp3",
                prompt="Bright bossa nova vocals",
                title="Lagoa",
                style="Bossa Nova",
                negative_tags="Metal",
            )
            result = await task.complete(timeout=900)
            print(f"{task.task_id}: complete via Starlette, {len(result.tracks)} tracks")
    finally:
        await receiver.aclose()
        server.should_exit = True
        await serving
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
