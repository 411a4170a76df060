"""A background worker that survives restarts: store task ids, re-attach later.

    python examples/worker_resume.py submit   # submits, stores the id, exits at once
    python examples/worker_resume.py resume   # a new process picks the task up again

With the same receiver secret (ADDVOCALS_RECEIVER_SECRET) the resumed worker also
accepts the callbacks of tasks submitted before the restart; without it, or when they
were missed, polling finds the result.
"""

import asyncio
import json
import os
import sys
from pathlib import Path

from addvocals_async import AddVocalsClient, CallbackReceiver

STATE = Path(os.environ.get("WORKER_STATE", "worker-tasks.json"))


def receiver() -> CallbackReceiver:
    return CallbackReceiver(
        port=int(os.environ.get("ADDVOCALS_RECEIVER_PORT", "8089")),
        public_url=os.environ.get("ADDVOCALS_PUBLIC_URL"),
    )  # the secret comes from ADDVOCALS_RECEIVER_SECRET


async def submit() -> None:
    async with receiver() as rx, AddVocalsClient(receiver=rx) as client:
        task = await client.add_vocals(
            upload_url="https://cdn.example.org/instrumental.mp3",
            prompt="A slow gospel choir line",
            title="Night Shift",
            style="Gospel",
            negative_tags="Metal",
        )
        STATE.write_text(json.dumps({"pending": [task.task_id]}))
        print(f"submitted {task.task_id}; stored in {STATE}")


async def resume() -> None:
    pending = json.loads(STATE.read_text())["pending"]
    async with receiver() as rx, AddVocalsClient(receiver=rx) as client:
        for task_id in pending:
            result = await client.task(task_id).complete(timeout=900)
            print(f"{task_id}: {len(result.tracks)} tracks ({result.source})")
    STATE.write_text(json.dumps({"pending": []}))


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in ("submit", "resume"):
        sys.exit("usage: worker_resume.py submit|resume")
    asyncio.run(submit() if command == "submit" else resume())
