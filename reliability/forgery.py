"""Forgery and replay: forged, mutated, foreign and cross-task tokens, other tasks' old
URLs against live and re-attached tasks, kie signatures off-window, under a wrong key or
for another task. Nothing may resolve a task with the attacker's content."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import Counter
from typing import Any

import aiohttp
import yarl

from addvocals_async import (
    CallbackReceiver,
    Stage,
    VocalTask,
    sign_webhook,
)
from addvocals_async.testing import Simulator, StageTimes

from ._common import REQUEST, Row, callback_json, sim_client

SECRET = "reliability-forgery-secret-012345"
HMAC_KEY = "reliability-forgery-hmac-key"
EVIL = "https://evil.example"
SLOW = StageTimes(text=1e7, first=1e7, complete=1e7)  # nothing genuine arrives (10^4 s at ×1000)
QUICK = StageTimes(text=0.0, first=0.0, complete=1.0)


def _mutate(rng: random.Random, token: str) -> str:
    at = rng.randrange(len(token))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return token[:at] + rng.choice(alphabet.replace(token[at], "")) + token[at + 1 :]


def _token(url: str) -> str:
    return yarl.URL(url).name


class _Attack:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.sent: Counter[str] = Counter()
        self.taken: Counter[str] = Counter()  # answered 2xx where a refusal was due

    async def send(
        self,
        kind: str,
        receiver: CallbackReceiver,
        token: str,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        refusal_due: bool = True,
    ) -> None:
        url = f"{receiver.url}/cb/{token}"
        async with self.session.post(url, json=body, headers=headers) as response:
            await response.read()
            self.sent[kind] += 1
            if refusal_due and response.status < 300:
                self.taken[kind] += 1

    async def many(self, jobs: list[tuple[Any, ...]], concurrency: int = 32) -> None:
        queue = iter(jobs)

        async def worker() -> None:
            for job in queue:
                await self.send(*job)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _forged_content(tasks: list[VocalTask]) -> int:
    """Tasks that resolved at all (nothing genuine was due), or with the attacker's tracks."""
    bad = 0
    for task in tasks:
        if task.stage is not Stage.PENDING:
            bad += 1
    return bad


async def run(n: int = 40_000, *, seed: int = 5) -> list[Row]:
    rng = random.Random(seed)
    per = max(1, n // 8)  # requests per kind
    started = time.monotonic()
    other = CallbackReceiver(
        secret="another-secret-entirely-0123456789", public_url="http://127.0.0.1/addvocals"
    )
    async with aiohttp.ClientSession() as session:
        attack = _Attack(session)
        async with Simulator(speed=1000, seed=seed, stage_times=QUICK, rate_limit=None) as sim:
            receiver = CallbackReceiver(secret=SECRET)
            await receiver.start()
            client = sim_client(sim, receiver)
            # Old tasks: submitted and finished, their URLs now only "old".
            old = [await client.add_vocals(**REQUEST) for _ in range(5)]
            for task in old:
                await task.complete(timeout=10)
            old_tokens = [_token(sim.tasks[t.task_id].callback_url) for t in old]
            sim.stage_times = SLOW
            live = [await client.add_vocals(**REQUEST) for _ in range(20)]
            ids = [t.task_id for t in live]
            tokens = [_token(sim.tasks[i].callback_url) for i in ids]
            accepted_before = receiver.stats.accepted

            def victim() -> str:
                return rng.choice(ids)

            def evil(task_id: str) -> dict[str, Any]:
                return callback_json(task_id, rng.choice(["complete", "first", "error"]), host=EVIL)

            jobs: list[tuple[Any, ...]] = []
            for _ in range(per):
                rnd = rng.choice(
                    [
                        secrets.token_urlsafe(rng.randrange(1, 60)),
                        f"{secrets.token_urlsafe(16)}.{secrets.token_urlsafe(16)}",
                        secrets.token_hex(40),
                    ]
                )
                jobs.append(("random", receiver, rnd, evil(victim())))
                k = rng.randrange(len(ids))
                jobs.append(("mutated", receiver, _mutate(rng, tokens[k]), evil(ids[k])))
                foreign = _token(other.new_callback_url().url)
                jobs.append(("foreign secret", receiver, foreign, evil(victim())))
                a, b = rng.sample(range(len(ids)), 2)
                jobs.append(("cross-task", receiver, tokens[a], evil(ids[b])))
                jobs.append(("old URL → live", receiver, rng.choice(old_tokens), evil(victim())))
            await attack.many(jobs)
            live_forged = _forged_content(live) + receiver.stats.accepted - accepted_before

            # Restart with the same secret; the tasks are re-attached by id.
            await client.aclose()
            await receiver.aclose()
            receiver = CallbackReceiver(secret=SECRET)
            await receiver.start()
            client = sim_client(sim, receiver)
            reattached = [client.task(i) for i in ids]
            jobs = []
            for _ in range(per):
                a, b = rng.sample(range(len(ids)), 2)
                jobs.append(
                    ("old URL → re-attached", receiver, tokens[a], evil(ids[b]), None, False)
                )
                jobs.append(
                    (
                        "old URL → re-attached",
                        receiver,
                        rng.choice(old_tokens),
                        evil(victim()),
                        None,
                        False,
                    )
                )
            await attack.many(jobs)
            await asyncio.sleep(1.0)  # the polls those callbacks asked for
            reattached_forged = _forged_content(reattached) + receiver.stats.accepted
            await client.aclose()
            await receiver.aclose()

        # kie: the genuine URL of the task itself, with signatures that must not pass.
        async with (
            Simulator(
                provider="kie",
                speed=1000,
                seed=seed,
                stage_times=SLOW,
                webhook_hmac_key=HMAC_KEY,
                rate_limit=None,
            ) as sim,
            CallbackReceiver(secret=SECRET, webhook_hmac_key=HMAC_KEY) as receiver,
            sim_client(sim, receiver, provider="kie") as client,
        ):
            kie_live = [await client.add_vocals(**REQUEST) for _ in range(10)]
            kie_ids = [t.task_id for t in kie_live]
            kie_tokens = [_token(sim.tasks[i].callback_url) for i in kie_ids]
            jobs = []
            for _ in range(per):
                k = rng.randrange(len(kie_ids))
                task_id, token = kie_ids[k], kie_tokens[k]
                now = int(time.time())
                off = now + rng.choice([-1, 1]) * rng.randrange(301, 10**7)
                wrong_key = secrets.token_hex(16)
                other_id = kie_ids[(k + 1) % len(kie_ids)]
                for kind, stamp, key, signed in (
                    ("kie off-window", off, HMAC_KEY, task_id),
                    ("kie wrong key", now, wrong_key, task_id),
                    ("kie wrong task", now, HMAC_KEY, other_id),
                ):
                    headers = {
                        "X-Webhook-Timestamp": str(stamp),
                        "X-Webhook-Signature": sign_webhook(signed, stamp, key),
                    }
                    jobs.append((kind, receiver, token, evil(task_id), headers))
            await attack.many(jobs)
            kie_forged = _forged_content(kie_live) + receiver.stats.accepted
    elapsed = time.monotonic() - started
    total = sum(attack.sent.values())
    taken = sum(attack.taken.values())
    forged = live_forged + reattached_forged + kie_forged
    kinds = ", ".join(f"{k} {v}" for k, v in attack.sent.items())
    return [
        Row(
            "Forgery",
            f"forged callbacks ({kinds}; {elapsed:.0f} s)",
            total,
            f"answered 2xx where refusal due: {taken}; tasks resolved with forged content: "
            f"{forged} (live {live_forged}, re-attached {reattached_forged}, kie {kie_forged})",
            "0 accepted, 0 resolved",
            taken == 0 and forged == 0,
        )
    ]
