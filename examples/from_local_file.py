"""Start from a file on disk: no hosting, no presigned URL.

On sunoapi and kie the file goes to the provider's upload API (free, streamed); on apibox,
which has none, the receiver serves it at an unguessable URL until the API has fetched it.

Run against the real API (the public URL must reach the receiver's port):
    ADDVOCALS_API_KEY=... ADDVOCALS_PROVIDER=kie \
    ADDVOCALS_PUBLIC_URL=https://hooks.example.org/addvocals \
        python examples/from_local_file.py beat.mp3
or against the simulator (`addvocals simulate --provider kie` in another terminal):
    ADDVOCALS_BASE_URL=http://127.0.0.1:8181 ADDVOCALS_API_KEY=sim-key \
    ADDVOCALS_PROVIDER=kie python examples/from_local_file.py beat.mp3
Without a file argument it writes a tiny MP3 of silence and uses that.
"""

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from addvocals_async import AddVocalsClient, CallbackReceiver, LocalFileError, TaskFailedError

SILENCE = b"ID3\x04\x00\x00\x00\x00\x00\x00" + (b"\xff\xfb\x90\x64" + bytes(413)) * 40
"""An ID3 tag and 40 MPEG frames of silence (about a second): a stand-in instrumental."""


async def main(beat: Path) -> int:
    async with (
        CallbackReceiver(
            port=int(os.environ.get("ADDVOCALS_RECEIVER_PORT", "0")),
            public_url=os.environ.get("ADDVOCALS_PUBLIC_URL"),  # None: the bound address
        ) as receiver,
        AddVocalsClient(receiver=receiver) as client,  # key, provider from the environment
    ):
        try:
            task = await client.add_vocals(
                audio=beat,  # checked first: exists, at most 100 MB, audio by its first bytes
                prompt="A calm piano ballad with soothing vocals",
                title="Quiet Harbour",
                style="Jazz",
                negative_tags="Heavy Metal, Aggressive Vocals",
            )
        except LocalFileError as exc:
            print(f"cannot send it: {exc}", file=sys.stderr)
            return 2
        how = "uploaded to the provider" if client.profile.can_upload else "served from here"
        print(f"task {task.task_id} submitted, the file {how}")
        try:
            result = await task.complete(timeout=900)
        except TaskFailedError as exc:  # 451: the API could not fetch the file
            print(f"the task failed: code {exc.code}: {exc.msg}", file=sys.stderr)
            return 1
        for track in result.tracks:
            print(f"{track.id}: {track.audio_url}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(asyncio.run(main(Path(sys.argv[1]))))
    with tempfile.TemporaryDirectory() as folder:
        stand_in = Path(folder, "beat.mp3")
        stand_in.write_bytes(SILENCE)
        sys.exit(asyncio.run(main(stand_in)))
