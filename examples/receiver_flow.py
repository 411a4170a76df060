"""The receiver flow: callbacks resolve the task, no polling loop in sight.

Run against the real API (the public URL must reach the receiver's port):
    ADDVOCALS_API_KEY=... ADDVOCALS_PUBLIC_URL=https://hooks.example.org/addvocals \
        python examples/receiver_flow.py
or against the simulator (`addvocals simulate` in another terminal):
    ADDVOCALS_BASE_URL=http://127.0.0.1:8181 ADDVOCALS_API_KEY=sim-key \
        python examples/receiver_flow.py
"""

import asyncio
import os
import sys
from pathlib import Path

from addvocals_async import AddVocalsClient, CallbackReceiver, TaskFailedError


async def main() -> int:
    out_dir = Path(os.environ.get("OUT_DIR", "vocals-output"))
    async with (
        CallbackReceiver(
            host=os.environ.get("ADDVOCALS_RECEIVER_HOST", "127.0.0.1"),
            port=int(os.environ.get("ADDVOCALS_RECEIVER_PORT", "0")),
            public_url=os.environ.get("ADDVOCALS_PUBLIC_URL"),  # None: the bound address
        ) as receiver,
        AddVocalsClient(receiver=receiver) as client,  # key from ADDVOCALS_API_KEY
    ):
        task = await client.add_vocals(
            upload_url="https://cdn.example.org/instrumental.mp3",
            prompt="A calm piano ballad with soothing vocals",
            title="Quiet Harbour",
            style="Jazz",
            negative_tags="Heavy Metal, Aggressive Vocals",
            vocal_gender="f",
            style_weight=0.61,
            weirdness_constraint=0.72,
            audio_weight=0.65,
        )
        print(f"task {task.task_id} submitted")  # save it: client.task(id) resumes later
        try:
            await task.text(timeout=600)  # resolves even when the API skips this stage
            print("lyrics stage reached")
            result = await task.complete(timeout=900)
        except TaskFailedError as exc:
            print(f"the task failed: code {exc.code}: {exc.msg}", file=sys.stderr)
            return 1
        for track in result.tracks:
            path = await client.download(track, out_dir, overwrite=True)
            print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
