"""No public URL? Then the task is polled instead.

The API still insists on a callback URL, so give it one you own (its callbacks are simply
not used here). The SDK polls the details endpoint at the API's own pace until the task is
done: every 30 s while completion is far off, every 4 s around the 3 minutes a task
usually takes (PollPolicy.stage_times), about 15 requests in all.
    ADDVOCALS_API_KEY=... python examples/polling_only.py
or against the simulator (`addvocals simulate` in another terminal), whose tasks take 3 s:
the first poll, some 30 s in, finds the task done.
    ADDVOCALS_BASE_URL=http://127.0.0.1:8181 ADDVOCALS_API_KEY=sim-key \
        python examples/polling_only.py
"""

import asyncio
import os
import sys

from addvocals_async import AddVocalsClient


async def main() -> int:
    callback_url = os.environ.get("ADDVOCALS_CALLBACK_URL", "https://hooks.example.org/unused")
    async with AddVocalsClient(callback_url=callback_url) as client:
        task = await client.add_vocals(
            upload_url="https://cdn.example.org/instrumental.mp3",
            prompt="An upbeat folk chorus, two voices in harmony",
            title="Salt Road",
            style="Folk",
            negative_tags="Autotune",
        )
        print(f"task {task.task_id} submitted; polling")
        result = await task.complete(timeout=900)
        for track in result.tracks:
            print(f"{track.id} {track.duration:.1f}s {track.audio_url}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
