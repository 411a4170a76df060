"""Restart: tasks in flight when the receiver and the client close, re-attached by id
after a restart: with the same secret, and with another one (then by polling)."""

from __future__ import annotations

import asyncio
import time

from addvocals_async import (
    CallbackReceiver,
    TaskResult,
)
from addvocals_async.testing import Simulator, StageTimes

from ._common import REQUEST, Row, sim_client

SECRET = "reliability-restart-secret-012345"
# 0.3 / 0.6 / 0.9 s at speed 1000; callback retries 20, 40, 60 ms apart.
STAGES = StageTimes(text=300.0, first=600.0, complete=900.0)


async def _once(n: int, *, same_secret: bool) -> Row:
    started = time.monotonic()
    async with Simulator(
        speed=1000,
        seed=9,
        rate_limit=None,
        credits=10**9,
        stage_times=STAGES,
        retry_delays=(20.0, 40.0, 60.0),
    ) as sim:
        receiver = CallbackReceiver(secret=SECRET)
        await receiver.start()
        client = sim_client(sim, receiver)
        tasks = await asyncio.gather(*(client.add_vocals(**REQUEST) for _ in range(n)))
        ids = [t.task_id for t in tasks]
        await asyncio.sleep(0.35)  # some at text, none complete
        mid_flight = sum(1 for i in ids if sim.tasks[i].stage != "complete")
        port = receiver.port if receiver.port else int(receiver.url.split(":")[2].split("/")[0])
        await client.aclose()
        await receiver.aclose()
        await asyncio.sleep(0.1)
        receiver = CallbackReceiver(
            secret=SECRET if same_secret else SECRET + "-another", port=port
        )
        await receiver.start()
        client = sim_client(sim, receiver)
        reattached = [client.task(i) for i in ids]
        results = await asyncio.gather(
            *(t.complete(timeout=60) for t in reattached), return_exceptions=True
        )
        complete = wrong = 0
        for task_id, result in zip(ids, results, strict=True):
            if isinstance(result, TaskResult):
                expected = [(t.id, t.audio_url) for t in sim.tasks[task_id].tracks]
                if [(t.id, t.audio_url) for t in result.tracks] == expected:
                    complete += 1
                else:
                    wrong += 1
        sources = {r.source for r in results if isinstance(r, TaskResult)}
        rejected = receiver.stats.rejected_token
        await client.aclose()
        await receiver.aclose()
    elapsed = time.monotonic() - started
    how = "same secret" if same_secret else "another secret"
    return Row(
        "Restart",
        f"tasks in flight, receiver+client closed, restarted with {how} "
        f"({mid_flight} unfinished at the close; {elapsed:.0f} s)",
        n,
        f"complete {complete}, wrong {wrong}, via {'/'.join(sorted(sources))}; "
        f"callbacks refused by token {rejected}",
        f"{n} complete" + ("" if same_secret else " by polling"),
        complete == n and (same_secret or sources == {"poll"}),
    )


async def run(n: int = 300) -> list[Row]:
    return [await _once(n, same_secret=True), await _once(n, same_secret=False)]
