"""A worker process: submits tasks and awaits them, while their callbacks land on any
receiver of the tier (``addvocals serve --redis URL``) and reach it through Redis.

    python examples/scale_out/worker.py REDIS_URL PUBLIC_URL --name w1 --tasks 10
    python examples/scale_out/worker.py REDIS_URL PUBLIC_URL --name w1 --resume

``PUBLIC_URL`` is the tier's address as the API reaches it (your load balancer).
``--name`` names this worker's records in the Redis pending store: a worker killed
mid-flight and started again with the same name and ``--resume`` finds every task it
had submitted, including a submit whose answer it never got, and awaits them. The API
key and the receiver secret (shared with the tier) come from ``ADDVOCALS_API_KEY`` and
``ADDVOCALS_RECEIVER_SECRET``. Prints one JSON line per finished task.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from addvocals_async import (
    AddVocalsClient,
    AddVocalsError,
    AddVocalsRequest,
    APIConnectionError,
    APIError,
    CallbackReceiver,
    PollPolicy,
    VocalTask,
)
from addvocals_async.redis import RedisBackend

REQUEST = AddVocalsRequest(
    upload_url="https://cdn.example.org/instrumental.mp3",
    prompt="A warm soul vocal",
    title="Many Hands",
    style="Neo Soul",
    negative_tags="Metal",
)


def say(**record: object) -> None:
    print(json.dumps(record), flush=True)


async def follow(task: VocalTask) -> None:
    stages = []
    async for event in task.events(timeout=float(os.environ.get("WORKER_TIMEOUT", "1200"))):
        stages.append(event.stage.value if event.stage else event.callback_type)
    result = await task.complete()
    say(task_id=task.task_id, stages=stages, source=result.source, pid=os.getpid())


async def submit_one(client: AddVocalsClient) -> VocalTask | None:
    try:
        return await client.add_vocals(REQUEST)
    except (APIError, APIConnectionError) as exc:
        if not exc.maybe_submitted:
            raise
        # The task may exist: it is in the pending store, and --resume will find it.
        say(ambiguous=exc.callback_ref)
        return None


async def main(args: argparse.Namespace) -> None:
    backend = RedisBackend(args.redis, prefix=args.prefix)
    # Never serves: it only mints callback URLs on the tier's public URL.
    receiver = CallbackReceiver(public_url=args.public_url, backend=backend)
    client = AddVocalsClient(
        receiver=receiver,
        pending_store=backend.pending_store(args.name),
        poll=PollPolicy(grace=args.grace),
    )  # submits share one rate across every worker on this Redis (the default)
    try:
        async with client:
            if args.resume:
                tasks = await client.resume()
                say(resumed=len(tasks), known=sum(t.task_id_known for t in tasks))
            else:
                found = await asyncio.gather(*(submit_one(client) for _ in range(args.tasks)))
                tasks = [task for task in found if task is not None]
                say(submitted=len(tasks))
            await asyncio.gather(*(follow(task) for task in tasks))
    except AddVocalsError as exc:
        say(error=str(exc))
        raise SystemExit(1) from None
    finally:
        await receiver.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("redis", help="the Redis the receiver tier publishes to")
    parser.add_argument("public_url", help="the tier's address as the API reaches it")
    parser.add_argument("--name", required=True, help="this worker's pending-store name")
    parser.add_argument("--tasks", type=int, default=10, help="how many tasks to submit")
    parser.add_argument("--resume", action="store_true", help="await what --name had in flight")
    parser.add_argument("--prefix", default="addvocals:", help="the tier's Redis key prefix")
    parser.add_argument(
        "--grace",
        type=float,
        default=15.0,
        help="seconds a callback may be late, past its stage's usual time, before a poll",
    )
    asyncio.run(main(parser.parse_args()))
