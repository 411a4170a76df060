"""``python -m benchmarks [--quick]``: run every benchmark, print the ratios, and exit 1
when a goal is missed."""

from __future__ import annotations

import asyncio
import json
import sys

from . import pending_memory, receiver_throughput, redis_seam


async def main(quick: bool) -> int:
    throughput = await receiver_throughput.run(n=150 if quick else 3000, rounds=1 if quick else 5)
    memory = await pending_memory.run(n=1000 if quick else 100_000)
    seam = await redis_seam.run(quick)
    figures = {"receiver_throughput": throughput, "pending_memory": memory, "redis_seam": seam}
    print(json.dumps(figures, indent=2))
    missed = []
    if "skipped" not in seam:
        redis_ratio, p99 = seam["throughput"]["ratio"], seam["latency"]["p99_ms"]
        if redis_ratio < redis_seam.GOAL_THROUGHPUT:
            missed.append(f"Redis receiver throughput {redis_ratio:.2f}x < 0.6x")
        if p99 > redis_seam.GOAL_P99_MS:
            missed.append(f"cross-process p99 {p99:.1f} ms > {redis_seam.GOAL_P99_MS} ms")
    if throughput["ratio"] < throughput["goal"]:
        missed.append(f"receiver throughput {throughput['ratio']:.2f}x < {throughput['goal']}x")
    if memory["memory_ratio"] > memory["memory_goal"]:
        missed.append(f"memory ratio {memory['memory_ratio']:.2f} > {memory['memory_goal']}")
    if memory["dispatch_ratio"] > memory["dispatch_goal"]:
        missed.append(f"dispatch ratio {memory['dispatch_ratio']:.2f} > {memory['dispatch_goal']}")
    for line in missed:
        print(f"goal missed: {line}", file=sys.stderr)
    if quick:
        return 0  # a smoke run: too small to judge
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main("--quick" in sys.argv)))
