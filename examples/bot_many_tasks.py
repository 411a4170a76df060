"""A bot-style handler: many tasks at once, each reported the moment it finishes.

One receiver serves every task; each `complete()` is just a future, so a thousand
pending tasks cost no threads and no polling.
"""

import asyncio
import os
import sys

from addvocals_async import AddVocalsClient, AddVocalsError, CallbackReceiver, VocalTask

STYLES = ["Jazz", "Neo Soul", "Folk", "Synth Pop", "Gospel", "Bossa Nova"]


async def handle_request(client: AddVocalsClient, user: str, style: str) -> str:
    """What a chat bot does per message: submit, wait, answer."""
    task: VocalTask = await client.add_vocals(
        upload_url="https://cdn.example.org/instrumental.mp3",
        prompt=f"A {style.lower()} vocal line for {user}",
        title=f"{style} for {user}",
        style=style,
        negative_tags="Screamo",
    )
    try:
        result = await task.complete(timeout=900)
    except AddVocalsError as exc:
        return f"{user}: sorry, that did not work ({exc})"
    return f"{user}: your {style} track is ready: {result.tracks[0].audio_url}"


async def main() -> int:
    count = int(os.environ.get("TASKS", "6"))
    async with (
        CallbackReceiver(public_url=os.environ.get("ADDVOCALS_PUBLIC_URL")) as receiver,
        AddVocalsClient(receiver=receiver) as client,
    ):
        jobs = [handle_request(client, f"user{i}", STYLES[i % len(STYLES)]) for i in range(count)]
        for finished in asyncio.as_completed(jobs):
            print(await finished)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
