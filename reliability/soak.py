"""Soak: many tasks through the simulator with a seeded mix of every scenario, duplicates
×5, all-early callbacks, ambiguous submits and rate limits. Every task must end exactly
once, with the simulator's own tracks, none paid for twice, every ambiguous submit found
again, and nothing left registered afterwards."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import yarl

from addvocals_async import (
    AddVocalsError,
    APIConnectionError,
    APIError,
    CallbackReceiver,
    InMemoryBackend,
    MaintenanceError,
    RateLimitError,
    SlidingWindowThrottle,
    Stage,
    TaskFailedError,
    TaskState,
    VocalTask,
)
from addvocals_async.testing import SCENARIOS, Simulator

from ._common import REQUEST, Row, sim_client

SECRET = "reliability-soak-secret-0123456789"
# Every scenario by the same weight, half the submits left to the normal run.
MIX = {name: 0.5 / len(SCENARIOS) for name in SCENARIOS}


def _ref_of(callback_url: str) -> str:
    return yarl.URL(callback_url).name.partition(".")[0]


async def run(n: int = 10_000, *, seed: int = 20250101, concurrency: int = 250) -> list[Row]:
    started = time.monotonic()
    draw = random.Random(seed)
    terminal: Counter[str] = Counter()  # terminal-listener calls per task id
    resolutions: dict[str, set[str]] = {}  # the distinct outcomes each task id ended with
    outcomes: dict[str, tuple[str, Any]] = {}  # task id -> ("complete", tracks) | ("failed", code)
    problems: Counter[str] = Counter()
    examples: dict[str, str] = {}
    ambiguous = recovered = rejected = 0
    jobs_with_task: dict[int, str] = {}

    def note(kind: str, detail: str) -> None:
        problems[kind] += 1
        examples.setdefault(kind, detail)

    async with (
        Simulator(
            speed=1000,
            seed=seed,
            mix=MIX,
            rate_limit=(200, 1.0),
            details_rate_limit=3,
            hang_seconds=3.0,
            credits=10**9,
            retry_delays=(60.0, 300.0, 900.0),
            # The real sender waits 15 s for an answer: at speed 1000 that is 15 ms, which
            # a loaded machine misses on every attempt, so whole tasks' callbacks were lost
            # to the time compression (the soak's intermittent misses), not to the SDK.
            min_callback_timeout=5.0,
        ) as sim,
        CallbackReceiver(secret=SECRET) as receiver,
        sim_client(
            sim,
            receiver,
            request_timeout=2.0,
            throttle=SlidingWindowThrottle(200, 1.0),  # the simulator's rate, as in life
        ) as client,
    ):

        def ended(state: TaskState) -> None:
            if state.task_id is None:
                return
            terminal[state.task_id] += 1
            try:
                result = state.result_for(Stage.COMPLETE)
                seen = repr([(t.id, t.audio_url) for t in result.tracks] if result else None)
            except TaskFailedError as exc:
                seen = f"failed {exc.code}"
            resolutions.setdefault(state.task_id, set()).add(seen)

        client.tasks.terminal_listeners.append(ended)

        refs: dict[str, list[str]] = {}  # callback ref -> the simulator's tasks created with it
        indexed = 0

        def by_ref(ref: str) -> list[str]:
            nonlocal indexed
            created = list(sim.tasks.values())
            for sim_task in created[indexed:]:
                refs.setdefault(_ref_of(sim_task.callback_url), []).append(sim_task.task_id)
            indexed = len(created)
            return refs.get(ref, [])

        async def one(i: int) -> None:
            nonlocal ambiguous, recovered, rejected
            # Scripted on top of the mix: duplicates ×5 and all-early callbacks.
            pick = draw.random()
            if pick < 0.05:
                sim.script("duplicates", copies=5)
            elif pick < 0.10:
                sim.script("early_callback", all_early=True)
            task: VocalTask | None = None
            for attempt in range(50):
                await paced()
                try:
                    task = await client.add_vocals(**{**REQUEST, "title": f"soak-{i}"})
                    break
                except (APIError, APIConnectionError) as exc:
                    if not exc.maybe_submitted:  # rate limit, maintenance: nothing created
                        if not isinstance(exc, (RateLimitError, MaintenanceError)):
                            note("unexpected", f"job {i}: {exc!r}")
                            return
                        rejected += 1
                        await asyncio.sleep(min(1.0, 0.05 * (attempt + 1)))
                        continue
                    ambiguous += 1
                    task = await client.recover(exc, timeout=15)
                    if task is None:
                        note("unrecovered", f"job {i}: {type(exc).__name__}")
                        return
                    ref = exc.callback_ref or ""
                    if by_ref(ref) != [task.task_id]:
                        note("recovered the wrong task", f"job {i}")
                    recovered += 1
                    break
            if task is None:
                note("never submitted", f"job {i}")
                return
            jobs_with_task[i] = task.task_id
            try:
                result = await task.complete(timeout=60)
            except TaskFailedError as exc:
                outcomes[task.task_id] = ("failed", exc.code)
            except AddVocalsError as exc:
                note("lost", f"{task.task_id}: {type(exc).__name__}: {exc}")
            else:
                outcomes[task.task_id] = (
                    "complete",
                    [(t.id, t.audio_url) for t in result.tracks],
                )

        queue = iter(range(n))
        pace = {"next": time.monotonic()}

        async def paced() -> None:
            # About 150 submits a second, under the simulator's 200: rate limits then come
            # from bursts and the scripted rate_limited scenario, not from a resend storm.
            now = time.monotonic()
            slot = max(now, pace["next"])
            pace["next"] = slot + 1 / 150
            if slot > now:
                await asyncio.sleep(slot - now)

        async def worker() -> None:
            for i in queue:
                await one(i)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await sim.wait_idle(timeout=30)
        await asyncio.sleep(0.2)

        # Checks against the simulator's own record.
        for task_id, (kind, value) in outcomes.items():
            sim_task = sim.tasks.get(task_id)
            if sim_task is None:
                note("wrong", f"{task_id} unknown to the simulator")
                continue
            if kind == "complete":
                expected = [(t.id, t.audio_url) for t in sim_task.tracks]
                if sim_task.stage == "failed" or value != expected:
                    note("wrong", f"{task_id} ({sim_task.scenario}) tracks differ")
            elif sim_task.stage != "failed" or (
                sim_task.error_code is not None and value != sim_task.error_code
            ):
                note("wrong", f"{task_id} ({sim_task.scenario}) failed with {value}")
        for task_id, seen in resolutions.items():
            if len(seen) > 1:
                note("double-resolved", f"{task_id}: {sorted(seen)}")
        repeated = sum(1 for count in terminal.values() if count > 1)
        titles = Counter(str(t.request.get("title")) for t in sim.tasks.values())
        paid_twice = sum(1 for c in titles.values() if c > 1)
        created = len(sim.tasks)
        lost = created - len(outcomes) - problems["lost"]
        backend = receiver.backend
        assert isinstance(backend, InMemoryBackend)  # the default seam, which has a len()
        left = (len(client.tasks), len(backend))
        submits = len(sim.submits())
        rate_limited = sum(1 for r in sim.submits() if r.code in (405, 430, 455))
        scenarios = Counter(t.scenario for t in sim.tasks.values())

    elapsed = time.monotonic() - started
    lost_total = problems["lost"] + problems["unrecovered"] + max(0, lost)
    detail = "; ".join(f"{k}: {examples[k]}" for k in problems)
    rows = [
        Row(
            "Soak",
            f"tasks, {len(scenarios)} scenarios + dup×5 + all-early ({elapsed:.0f} s; "
            f"{submits} submits, {rate_limited} rate-limited/455)",
            n,
            f"lost {lost_total}, double-resolved {problems['double-resolved']}, "
            f"wrong {problems['wrong']}, paid twice {paid_twice}"
            + (f" (terminal listener ran twice, same outcome: {repeated})" if repeated else "")
            + (f" [{detail}]" if detail else ""),
            "0 lost, 0 double, 0 wrong, 0 paid twice",
            lost_total == 0
            and problems["double-resolved"] == 0
            and problems["wrong"] == 0
            and paid_twice == 0
            and len(jobs_with_task) == n
            and created == n,
        ),
        Row(
            "Soak",
            "ambiguous submits → client.recover(error)",
            ambiguous,
            f"recovered {recovered}, wrong task {problems['recovered the wrong task']}",
            "all recovered, each the simulator's task",
            ambiguous > 0 and recovered == ambiguous and not problems["recovered the wrong task"],
        ),
        Row(
            "Soak",
            "registry and seam after the soak",
            created,
            f"client.tasks {left[0]}, receiver.backend {left[1]}",
            "0 and 0",
            left == (0, 0),
        ),
    ]
    return rows
