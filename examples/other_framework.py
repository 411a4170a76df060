"""Route callbacks from another web framework (Starlette here; FastAPI is the same).

`receiver.handle(path, headers, body)` does every check (token, size, JSON, signature)
and returns the status and JSON body to answer. The receiver itself serves nothing.
Needs `pip install starlette uvicorn` (both are in this project's dev extra).
"""

import asyncio
import os
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from addvocals_async import AddVocalsClient, CallbackReceiver

PORT = int(os.environ.get("APP_PORT", "8091"))
receiver = CallbackReceiver(
    public_url=os.environ.get("ADDVOCALS_PUBLIC_URL", f"http://127.0.0.1:{PORT}/hooks")
)


async def addvocals_callback(request: Request) -> JSONResponse:
    answer = await receiver.handle(request.url.path, request.headers, await request.body())
    return JSONResponse(dict(answer.body), status_code=answer.status)


app = Starlette(routes=[Route("/hooks/cb/{token}", addvocals_callback, methods=["POST"])])


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
