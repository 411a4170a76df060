"""``addvocals demo``: the whole flow, end to end, on the built-in simulator.

It uses only the public API, exactly as a user's program would: a ``CallbackReceiver``
on 127.0.0.1, an ``AddVocalsClient`` pointed at the simulator, ``add_vocals``, the live
stages, and ``download`` of both tracks. No API key and no network are needed.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import TextIO

from .. import AddVocalsClient, CallbackReceiver
from .._config import API_KEY_ENV
from ._output import Progress, download_tracks, follow, local_files

__all__ = ["DEMO_SEED", "run_demo"]

DEMO_SEED = 2026

_REAL_USE = f"""\
To do the same against the real API:
  export {API_KEY_ENV}=...            # from your provider's dashboard
  addvocals submit --upload-url https://your-cdn/instrumental.mp3 \\
      --prompt "A calm piano ballad with soothing vocals" --title "Quiet Harbour" \\
      --style Jazz --negative-tags "Heavy Metal" \\
      --receiver-port 8080 --public-url https://your-host.example/addvocals --wait
  (the public URL must reach port 8080 on this machine: a reverse proxy or a tunnel)
"""


async def run_demo(out_dir: Path, *, speed: float = 40.0, out: TextIO) -> list[Path]:
    """Run the demo, writing the tracks into ``out_dir``; returns the files written."""
    from ..testing import Simulator

    started = time.monotonic()
    out.write(
        "addvocals demo: the Add Vocals flow on the built-in simulator (no key, no network)\n"
    )
    async with (
        # Seeded: the same task and track ids every run, so the demo replaces its own two
        # files in out_dir instead of adding two more each time.
        Simulator(speed=speed, seed=DEMO_SEED) as sim,
        CallbackReceiver(secret=secrets.token_bytes(32)) as receiver,
        AddVocalsClient(sim.api_key, base_url=sim.base_url, receiver=receiver) as client,
    ):
        out.write(f"  simulator  {sim.base_url} (provider {sim.provider}, {speed:g}x speed)\n")
        out.write(f"  receiver   {receiver.url}\n\n")
        task = await client.add_vocals(
            upload_url="https://cdn.example.org/stems/harbour-instrumental.wav",
            prompt="A warm, breathy female vocal about lanterns on a quiet harbour at night",
            title="Harbour Lanterns",
            style="Neo Soul",
            negative_tags="Screamo, Distorted Vocals",
            vocal_gender="f",
            style_weight=0.55,
            audio_weight=0.8,
        )
        out.write(f"submitted: task id {task.task_id}\n")
        result = await follow(task, Progress(out), timeout=120)
        out.write(
            f"\n{len(result.tracks)} tracks ready; downloading into {out_dir}/ "
            "(the same two files each run, replaced)\n"
        )
        with local_files(out_dir):
            out_dir.mkdir(parents=True, exist_ok=True)
        paths = await download_tracks(client, result.tracks, out_dir, overwrite=True, stream=out)
        stats = receiver.stats
    elapsed = time.monotonic() - started
    # The "saved" lines above named each file already: no second list of the same paths.
    out.write(
        f"\nDone in {elapsed:.1f} s: {stats.accepted} callbacks accepted, "
        f"{len(paths)} files written into {out_dir}/\n"
    )
    out.write("\n" + _REAL_USE)
    return paths
