"""Issue 11, "the first hour": what a new user meets in the CLI, the pytest fixture, the
packaging and the simulator, each case reproduced as that user would meet it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import attrs
import pytest
from helpers import DEAD_CALLBACK, NO_DETAILS_LIMIT, REQUEST, SECRET, client_for, free_port

from addvocals_async import (
    PROVIDERS,
    AddVocalsClient,
    CallbackReceiver,
    LengthLimits,
    PollPolicy,
    RequestValidationError,
    RetryPolicy,
    Stage,
    TaskTimeoutError,
)
from addvocals_async.cli import build_parser, main
from addvocals_async.cli._output import STAGE_WORDS
from addvocals_async.testing import Simulator

ROOT = Path(__file__).resolve().parent.parent
ADDVOCALS = str(Path(sys.executable).with_name("addvocals"))


@attrs.frozen
class Run:
    code: int
    out: str
    err: str


class Terminal(io.StringIO):
    """stdout as a person's terminal."""

    def isatty(self) -> bool:
        return True


async def run_main(
    capsys: pytest.CaptureFixture[str], *args: str, out: io.StringIO | None = None
) -> Run:
    """``cli.main`` in a worker thread (it runs its own event loop); stderr from capsys."""
    capsys.readouterr()
    buffer = out if out is not None else io.StringIO()
    code = await asyncio.to_thread(main, list(args), out=buffer)
    return Run(code, buffer.getvalue(), capsys.readouterr().err)


def api(sim: Simulator) -> list[str]:
    return ["--base-url", sim.base_url, "--api-key", sim.api_key]


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(speed=1000, seed=11, details_rate_limit=NO_DETAILS_LIMIT) as simulator:
        yield simulator


async def finished_task(sim: Simulator) -> str:
    async with client_for(sim) as client:
        task = await client.add_vocals(**REQUEST)
        await task.complete(timeout=10)
        return task.task_id


# ---------------------------------------------------------------- 6: an unreachable API


async def test_wait_against_an_unreachable_api_stops_with_exit_6(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    # The deadline only bounds a failure of this test (the old code waited it all out).
    run = await run_main(capsys, "wait", "4d8e0f3a91b27c65e0a4f1d9b3c87e52", "--base-url", dead,
                         "--api-key", "K", "--timeout", "15")  # fmt: skip
    assert run.code == 6, run
    assert time.monotonic() - started < 10  # not the 20-minute deadline
    errors = [line for line in run.err.splitlines() if line.startswith("addvocals: error:")]
    assert len(errors) == 1, run.err
    assert "unreachable" in errors[0]
    assert "polls" in errors[0]
    assert "is not complete" not in run.err  # not blamed on the task


async def test_a_library_wait_rides_out_an_unreachable_api_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.INFO, logger="addvocals_async")
    async with AddVocalsClient(
        "K", base_url=dead, callback_url=DEAD_CALLBACK, retry=RetryPolicy.no_wait()
    ) as client:
        task = client.task("4d8e0f3a91b27c65e0a4f1d9b3c87e52")
        with pytest.raises(TaskTimeoutError):
            await task.complete(timeout=0.6)  # polls at 0, 0.1, 0.25 s… under the switch
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "reach the API" in r.message
    ]
    assert len(warnings) == 1, [r.message for r in caplog.records]
    assert "3 polls in a row" in warnings[0].getMessage()


async def test_a_library_wait_can_ask_to_give_up_when_unreachable() -> None:
    from addvocals_async import APIConnectionError

    dead = f"http://127.0.0.1:{free_port()}"
    policy = PollPolicy(give_up_unreachable=True, unreachable_after=2)
    async with AddVocalsClient(
        "K", base_url=dead, callback_url=DEAD_CALLBACK, poll=policy, retry=RetryPolicy.no_wait()
    ) as client:
        task = client.task("4d8e0f3a91b27c65e0a4f1d9b3c87e52")
        with pytest.raises(APIConnectionError, match="2 polls"):
            await task.complete(timeout=10)


# ---------------------------------------------------------------- 7: the pytest fixture


@pytest.mark.real_timing  # the suite's own switch off: the fixture must turn it on itself
async def test_the_fixture_turns_the_testing_switch_on_at_its_speed(
    addvocals_simulator: Simulator,
) -> None:
    from addvocals_async import is_testing
    from addvocals_async._config import time_scale

    assert is_testing()
    assert time_scale() == pytest.approx(1 / addvocals_simulator.speed)
    assert addvocals_simulator.scale_rate_limits is True


@pytest.mark.real_timing
async def test_thirty_concurrent_jobs_under_the_fixture_take_well_under_a_second_each(
    addvocals_simulator: Simulator,
) -> None:
    sim = addvocals_simulator
    started = time.monotonic()
    async with (
        CallbackReceiver(secret=SECRET) as receiver,
        AddVocalsClient(sim.api_key, base_url=sim.base_url, receiver=receiver) as client,
    ):

        async def job() -> int:
            task = await client.add_vocals(**REQUEST)
            return len((await task.complete(timeout=30)).tracks)

        counts = await asyncio.gather(*(job() for _ in range(30)))
    elapsed = time.monotonic() - started
    assert counts == [2] * 30
    assert elapsed < 5, f"30 jobs took {elapsed:.1f} s under the 1000x fixture"


# ---------------------------------------------------------------- 9: other frameworks


def test_a_receiver_without_a_url_says_how_to_give_it_one() -> None:
    receiver = CallbackReceiver(secret=SECRET)
    with pytest.raises(RuntimeError) as raised:
        _ = receiver.url
    text = str(raised.value)
    assert "public_url" in text
    assert "FastAPI" in text
    assert "don't start it" in text


async def test_starlette_route_answers_callbacks_over_real_http(sim: Simulator) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    from starlette.applications import Starlette

    from addvocals_async.starlette import callback_route

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    public = f"http://127.0.0.1:{port}/hooks"
    receiver = CallbackReceiver(public_url=public, secret=SECRET, max_body_size=8192)
    route = callback_route(receiver)
    assert route.path == "/hooks/cb/{token}"
    app = Starlette(routes=[route])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn offers a flag, not an event)
            await asyncio.sleep(0.01)
        async with client_for(sim, receiver, poll=PollPolicy(grace=300)) as client:
            task = await client.add_vocals(**REQUEST)
            result = await task.complete(timeout=10)
        assert result.source == "callback"
        assert {d.status for d in sim.deliveries_for(task.task_id)} == {200}
        assert len(result.tracks) == 2
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{public}/cb/forged.token", data=b"{}") as resp:
                assert resp.status == 403
            good = sim.deliveries_for(task.task_id)[0].url
            async with http.post(good, data=b"x" * 9000) as resp:
                assert resp.status == 413
    finally:
        await receiver.aclose()
        server.should_exit = True
        await serving


# ---------------------------------------------------------------- 12: --json, closed pipes


async def test_json_output_is_one_json_document_per_line(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    run = await run_main(
        capsys, "submit", *_request_args(), *api(sim), "--callback-url", DEAD_CALLBACK,
        "--wait", "--json", "--poll-interval", "0.5",
    )  # fmt: skip
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert isinstance(records[0], dict)
    assert records[0]["stage"] == "pending"
    assert records[1]["stage"] == "complete"
    assert records[0]["task_id"] == records[1]["task_id"]
    run = await run_main(capsys, "submit", *_request_args(), *api(sim), "--callback-url",
                         DEAD_CALLBACK, "--json")  # fmt: skip
    assert run.code == 0, run.err
    assert isinstance(json.loads(run.out), dict)


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_a_closed_pipe_ends_quietly(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = await finished_task(sim)
    run = await run_main(capsys, "status", task_id, *api(sim), "--json", out=ClosedPipe())
    assert run.code == 0
    assert run.err == ""


# ---------------------------------------------------------------- 13: SIGTERM


def _child_env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDVOCALS_")}
    env["ADDVOCALS_TESTING"] = "1"
    env.update(extra)
    return env


async def _start(*args: str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        ADDVOCALS, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=dict(env),
    )  # fmt: skip


@pytest.mark.parametrize("command", ["serve", "simulate"])
async def test_serve_and_simulate_stop_cleanly_on_sigterm(command: str) -> None:
    port = free_port()
    args = ["--port", str(port)]
    if command == "serve":
        args += ["--receiver-secret", SECRET]
    proc = await _start(command, *args, env=_child_env())
    try:
        banner = proc.stderr if command == "serve" else proc.stdout
        assert banner is not None
        line = await asyncio.wait_for(banner.readline(), 15)
        assert str(port) in line.decode(), line
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    if command == "serve":
        assert b"SIGTERM: draining" in err


# ---------------------------------------------------------------- 14: the CLI as people use it


def test_the_secret_option_has_one_name_everywhere() -> None:
    parser = build_parser()
    for argv in (
        ["serve", "--receiver-secret", "s"],
        ["serve", "--secret", "s"],  # the old spelling still works
        ["submit", "--upload-url", "u", "--prompt", "p", "--title", "t", "--style", "s",
         "--negative-tags", "n", "--receiver-secret", "s"],
    ):  # fmt: skip
        assert parser.parse_args(argv).receiver_secret == "s"


def test_serve_help_shows_receiver_secret_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "--receiver-secret" in text
    assert "--secret " not in text


async def test_wait_follows_without_claiming_to_have_submitted(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = await finished_task(sim)
    run = await run_main(capsys, "wait", task_id, *api(sim))
    assert run.code == 0, run.err
    assert "submitted" not in run.err
    assert f"{task_id}: following" in run.err
    assert f"{task_id}: complete" in run.err


async def test_the_ticker_speaks_the_permanent_lines_words_and_says_when_it_polls(
    sim: Simulator,
) -> None:
    from addvocals_async.cli._output import ticker_line

    async with client_for(sim, poll=PollPolicy(initial=20, maximum=20)) as client:
        task = await client.add_vocals(**REQUEST)
        await task.refresh()  # the first poll: the next one is about 20 s x 0.01 away
        line = ticker_line(task, "  1.0s")
        assert STAGE_WORDS[task.stage] in line
        assert "(pending)" not in line
        assert "waiting (" not in line
        assert "polling the API" in line
    async with (
        CallbackReceiver(secret=SECRET) as receiver,
        client_for(sim, receiver, poll=PollPolicy()) as client,  # stage times x 0.01
    ):
        task = await client.add_vocals(**REQUEST)
        line = ticker_line(task, "  0.0s")
        assert "waiting for callbacks" in line
        assert STAGE_WORDS[Stage.PENDING] in line


async def test_download_prints_each_path_once_on_a_terminal_and_can_skip_existing(
    sim: Simulator, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    task_id = await finished_task(sim)
    out = tmp_path / "songs"
    run = await run_main(capsys, "download", task_id, *api(sim), "--out", str(out), out=Terminal())
    assert run.code == 0, run.err
    files = sorted(out.iterdir())
    assert len(files) == 2
    screen = run.out + run.err  # a terminal shows both
    for path in files:
        assert screen.count(str(path)) == 1, screen
    # A re-run stops at the first existing file, unless told to keep what is there.
    again = await run_main(capsys, "download", task_id, *api(sim), "--out", str(out))
    assert again.code == 2
    files[0].unlink()
    kept = await run_main(
        capsys, "download", task_id, *api(sim), "--out", str(out), "--skip-existing"
    )
    assert kept.code == 0, kept.err
    assert sorted(out.iterdir()) == files
    assert sorted(kept.out.split()) == sorted(str(p) for p in files)
    assert "kept" in kept.err


async def test_ctrl_c_during_a_wait_says_how_to_resume() -> None:
    async with Simulator(speed=1, seed=8) as slow:
        async with client_for(slow) as client:
            task = await client.add_vocals(**REQUEST)
        proc = await _start("wait", task.task_id, *api(slow), env=_child_env())
        try:
            assert proc.stderr is not None
            await asyncio.wait_for(proc.stderr.readline(), 15)
            proc.send_signal(signal.SIGINT)
            _out, err = await asyncio.wait_for(proc.communicate(), 10)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 130
    assert f"resume with: addvocals wait {task.task_id}" in err.decode()


async def test_simulate_logs_each_request_and_callback_unless_quiet() -> None:
    from addvocals_async.testing._simulator import serve_until

    port = free_port()
    log = io.StringIO()
    stop = asyncio.Event()
    serving = asyncio.create_task(
        serve_until(stop, port=port, api_key="sim-key", speed=1000, out=io.StringIO(),
                    activity=log)
    )  # fmt: skip
    try:
        async with CallbackReceiver(secret=SECRET) as receiver:
            for _ in range(100):
                try:
                    async with AddVocalsClient(
                        "sim-key", base_url=f"http://127.0.0.1:{port}", receiver=receiver
                    ) as client:
                        task = await client.add_vocals(**REQUEST)
                        await task.complete(timeout=10)
                    break
                except Exception:  # not listening yet
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # a tick of the activity log
    finally:
        stop.set()
        await serving
    text = log.getvalue()
    assert "POST /api/v1/generate/add-vocals -> HTTP 200" in text
    for kind in ("text", "first", "complete"):
        assert f"callback {kind}" in text
    assert "/cb/<token>" in text
    assert "." not in text.split("/cb/")[1].split()[0].strip(":<>token")  # no token printed
    args = build_parser().parse_args(["simulate", "--quiet"])
    assert args.quiet is True


# ---------------------------------------------------------------- 15: make demo


async def test_demo_replaces_its_own_files_instead_of_adding_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo-output"
    for _ in range(2):
        run = await run_main(capsys, "demo", "--out", str(out), "--speed", "2000")
        assert run.code == 0, run.err
    assert len(list(out.iterdir())) == 2
    for path in out.iterdir():
        assert run.out.count(str(path)) == 1  # named once, not twice
    makefile = (ROOT / "Makefile").read_text()
    assert "first run only" in makefile


# ---------------------------------------------------------------- 16: length limits


async def test_length_limits_can_be_lifted_or_lowered_per_client_and_profile() -> None:
    lifted = LengthLimits(prompt=8000, style=2000, title=300, negative_tags=400)
    profile = attrs.evolve(PROVIDERS["apibox"], length_limits=lifted)
    long_title = "t" * 250
    async with Simulator(provider=profile, speed=1000) as sim:
        async with client_for(sim) as strict:
            with pytest.raises(RequestValidationError, match="at most 100"):
                await strict.add_vocals(**{**REQUEST, "title": long_title})
        async with client_for(sim, length_limits=lifted) as client:
            task = await client.add_vocals(**{**REQUEST, "title": long_title})
            assert task.task_id
        async with client_for(sim, provider=profile) as client:
            task = await client.add_vocals(**{**REQUEST, "title": long_title})
            assert task.task_id
        async with client_for(sim, length_limits=LengthLimits(prompt=10)) as client:
            with pytest.raises(RequestValidationError, match="at most 10 "):
                await client.add_vocals(**REQUEST)
        assert len(sim.tasks) == 2


# ---------------------------------------------------------------- 19: simulator strictness


ENGINES = [
    ("sunoapi", None, "chirp-v4-5"),  # the default V4_5PLUS, as the samples show it
    ("apibox", "V4_5ALL", "chirp-v4-5"),
    ("apibox", "V6_WILD", "chirp-v6"),
    ("apibox", "V5_5", "chirp-v5-5"),
    ("kie", "V4", "chirp-v4"),
]


async def test_simulated_tracks_name_their_engine_as_the_samples_do() -> None:
    async def engines(provider: str, model: str | None) -> set[str]:
        async with (
            Simulator(provider=provider, speed=1000, details_rate_limit=None) as sim,
            client_for(sim) as client,
        ):
            task = await client.add_vocals(**REQUEST, model=model)
            result = await task.complete(timeout=10)
        return {t.model_name for t in result.tracks}

    found = await asyncio.gather(*(engines(p, m) for p, m, _ in ENGINES))
    assert found == [{engine} for _, _, engine in ENGINES]


# ---------------------------------------------------------------- 20: packaging


def test_the_package_carries_its_license_links_and_python_versions() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT"
    assert meta["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(meta["urls"])
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in meta["classifiers"]
    extras = meta["optional-dependencies"]
    assert any(d.startswith("pytest-asyncio") for d in extras["testing"])
    assert any(d.startswith("starlette") for d in extras["starlette"])


def test_readme_links_work_on_the_package_index_too() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", readme)
    assert targets
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert relative == []


def _request_args() -> list[str]:
    return [
        "--upload-url", REQUEST["upload_url"], "--prompt", REQUEST["prompt"],
        "--title", REQUEST["title"], "--style", REQUEST["style"],
        "--negative-tags", REQUEST["negative_tags"],
    ]  # fmt: skip
