"""Every script in examples/ runs, as a user would run it, against the simulator."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from helpers import CHILD_TESTING, NO_DETAILS_LIMIT, free_port

from addvocals_async.testing import Simulator

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(speed=1000, seed=3, details_rate_limit=NO_DETAILS_LIMIT) as simulator:
        yield simulator


async def run_example(
    sim: Simulator,
    name: str,
    *args: str,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    **more_env: str,
) -> str:
    environ = {
        **os.environ,
        **CHILD_TESTING,  # polling_only.py's polls (up to 30 s apart) come 100 times as often
        "ADDVOCALS_BASE_URL": sim.base_url,
        "ADDVOCALS_API_KEY": sim.api_key,
        "ADDVOCALS_RECEIVER_SECRET": "example-secret-0123456789abcdef",
        **(env or {}),
        **more_env,
    }
    environ.pop("ADDVOCALS_PUBLIC_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
        *args,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


def submitted(sim: Simulator) -> list[str]:
    return list(sim.tasks)


async def test_receiver_flow(sim: Simulator, tmp_path: Path) -> None:
    out_dir = tmp_path / "vocals-output"  # not there yet, as on a first run
    out = await run_example(sim, "receiver_flow.py", OUT_DIR=str(out_dir))
    (task_id,) = submitted(sim)
    assert f"task {task_id} submitted" in out
    assert "lyrics stage reached" in out
    files = sorted(out_dir.glob("*.mp3"))
    assert [f.stem for f in files] == sorted(t.id for t in sim.tasks[task_id].tracks)
    assert [d.status for d in sim.deliveries] == [200, 200, 200]


async def test_polling_only(sim: Simulator) -> None:
    out = await run_example(sim, "polling_only.py")
    (task_id,) = submitted(sim)
    for track in sim.tasks[task_id].tracks:
        assert track.id in out
    # The callback URL is not ours: nothing was delivered, the result came from polling.
    assert all(d.status != 200 for d in sim.deliveries)
    assert any(r.path.endswith("record-info") for r in sim.requests)


async def test_bot_many_tasks(sim: Simulator) -> None:
    sim.script("duplicates", count=2)
    sim.script("skip_text")
    out = await run_example(sim, "bot_many_tasks.py", TASKS="6")
    lines = out.strip().splitlines()
    assert len(lines) == 6
    assert all("track is ready" in line for line in lines)
    assert sorted(line.split(":")[0] for line in lines) == [f"user{i}" for i in range(6)]


async def test_worker_resume_after_restart(sim: Simulator, tmp_path: Path) -> None:
    env = {
        "WORKER_STATE": str(tmp_path / "tasks.json"),
        "ADDVOCALS_RECEIVER_PORT": str(free_port()),
    }
    out = await run_example(sim, "worker_resume.py", "submit", env=env)
    (task_id,) = submitted(sim)
    assert f"submitted {task_id}" in out
    out = await run_example(sim, "worker_resume.py", "resume", env=env)
    assert f"{task_id}: 2 tracks" in out
    assert (tmp_path / "tasks.json").read_text() == '{"pending": []}'


async def test_mount_in_aiohttp_app(sim: Simulator) -> None:
    out = await run_example(sim, "mount_in_aiohttp_app.py", APP_PORT=str(free_port()))
    (task_id,) = submitted(sim)
    assert f"{task_id}: complete with 2 tracks" in out
    assert "callbacks accepted by the mounted receiver: 3" in out


async def test_other_framework(sim: Simulator) -> None:
    out = await run_example(sim, "other_framework.py", APP_PORT=str(free_port()))
    (task_id,) = submitted(sim)
    assert f"{task_id}: complete via Starlette, 2 tracks" in out
    assert all(d.status == 200 for d in sim.deliveries)
    assert len(sim.deliveries) == 3


@pytest.mark.parametrize("provider", ["apibox", "kie"])
async def test_from_local_file(provider: str) -> None:
    """apibox: the receiver serves the file; kie: it goes to the upload API. Either way
    the simulator fetched exactly the file the example was given."""
    async with Simulator(
        provider=provider, speed=1000, seed=3, details_rate_limit=NO_DETAILS_LIMIT
    ) as sim:
        out = await run_example(sim, "from_local_file.py", ADDVOCALS_PROVIDER=provider)
        (task_id,) = submitted(sim)
        task = sim.tasks[task_id]
        how = "served from here" if provider == "apibox" else "uploaded to the provider"
        assert f"task {task_id} submitted, the file {how}" in out
        assert task.input_size is not None
        assert task.input_size > 10_000
        assert all(track.id in out for track in task.tracks)
        assert len(sim.uploads) == (0 if provider == "apibox" else 1)


async def test_user_code_example_runs_outside_auto_mode() -> None:
    """examples/test_user_code.py copied into a project of one's own runs with a plain
    `pytest`: pytest-asyncio's default (strict) mode, no settings of this project."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_mode=strict",
        str(EXAMPLES / "test_user_code.py"),
        env={**os.environ, **CHILD_TESTING},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode()
    assert "3 passed" in output.decode()
