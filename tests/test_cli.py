"""The ``addvocals`` command line as a new user meets it.

Cases about what only a process shows (the console script and ``python -m`` entry
points, pipes, signals, ``--debug`` tracebacks) run the installed script as a real process,
once per behaviour; every other case calls ``cli.main`` in a worker thread, which is the
same code path minus a second of interpreter start-up. Both run against a ``Simulator``
in this test's event loop on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from helpers import (
    CHILD_TESTING,
    DEAD_CALLBACK,
    NO_DETAILS_LIMIT,
    QUICK_RETRIES,
    REQUEST,
    free_port,
    request_args,
)

from addvocals_async import AddVocalsClient, AddVocalsRequest, CallbackReceiver
from addvocals_async.cli import build_parser, main
from addvocals_async.testing import Simulator

SECRET_KEY = "SECRET-xyz-123"
REQUEST_ARGS = request_args(REQUEST)
STAGES = ["submitted", "lyrics written", "first track ready", "complete"]


def _console_script() -> str:
    beside = Path(sys.executable).with_name("addvocals")
    found = str(beside) if beside.exists() else shutil.which("addvocals")
    if found is None:
        raise RuntimeError("the addvocals console script is not installed (pip install -e .)")
    return found


ADDVOCALS = _console_script()


def clean_env(**extra: str) -> dict[str, str]:
    """A fresh shell's environment: none of our variables unless given, but the testing
    switch (``ADDVOCALS_TESTING``, which ``extra`` may turn off)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDVOCALS_")}
    env.update(CHILD_TESTING)  # no real backoff or poll interval in the child either
    env.update(extra)
    return env


def api(sim: Simulator) -> list[str]:
    return ["--base-url", sim.base_url, "--api-key", sim.api_key]


@attrs.frozen
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def assert_one_error_line(self, *needles: str) -> str:
        """Exactly one non-empty line on stderr, no traceback, mentioning each needle."""
        assert "Traceback" not in self.err, self.err
        assert len(self.err_lines) == 1, self.err
        line = self.err_lines[0]
        for needle in needles:
            assert needle in line, line
        return line


async def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    program: Sequence[str] = (ADDVOCALS,),
) -> Run:
    """Run the console script to completion with pipes for stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *program,
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else clean_env(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def _default_sigint() -> None:
    # A shell that started this test run in the background may have left SIGINT ignored;
    # a person's terminal delivers it, so the child gets the default disposition back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.asynccontextmanager
async def spawn(
    *args: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A long-running CLI process, killed on the way out whatever happened."""
    proc = await asyncio.create_subprocess_exec(
        ADDVOCALS,
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else clean_env(),
        preexec_fn=_default_sigint,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def read_line(stream: asyncio.StreamReader | None, timeout: float = 10.0) -> str:
    assert stream is not None
    line = await asyncio.wait_for(stream.readline(), timeout)
    if not line:
        raise AssertionError("the process closed its output before printing the line")
    return line.decode()


async def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    """``cli.main`` in a worker thread (it runs its own event loop), as the console script
    would call it; stderr comes from capsys."""
    capsys.readouterr()
    buffer = io.StringIO()
    code = await asyncio.to_thread(_main_exit_code, list(args), buffer)
    return Run(code, buffer.getvalue(), capsys.readouterr().err)


def _main_exit_code(args: list[str], out: io.StringIO) -> int:
    try:
        return main(args, out=out)
    except SystemExit as exc:  # argparse refusing the command line, as the script would exit
        return exc.code if isinstance(exc.code, int) else 1


_MPEG1_L3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG1_RATES = (44100, 48000, 32000)


def assert_valid_mp3(path: Path) -> None:
    """An ID3 tag, or MPEG audio frames from the first byte (walked to the end for
    MPEG-1 Layer III, the kind the simulator serves)."""
    data = path.read_bytes()
    assert data, f"{path} is empty"
    if data.startswith(b"ID3"):
        return
    offset = 0
    while offset < len(data):
        head = data[offset : offset + 4]
        assert len(head) == 4, f"{path}: truncated frame header at byte {offset}"
        assert head[0] == 0xFF, f"{path}: no frame sync at {offset}"
        assert head[1] & 0xE0 == 0xE0, f"{path}: no frame sync at {offset}"
        version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
        bitrate, rate, padding = head[2] >> 4, (head[2] >> 2) & 3, (head[2] >> 1) & 1
        assert version != 1, f"{path}: reserved MPEG version"
        assert layer != 0, f"{path}: reserved MPEG layer"
        assert bitrate not in (0, 15), f"{path}: bad bitrate index"
        assert rate != 3, f"{path}: bad sample rate index"
        if (version, layer) != (3, 1):
            return  # not MPEG-1 Layer III: the header check is all we do
        offset += 144 * _MPEG1_L3_KBPS[bitrate] * 1000 // _MPEG1_RATES[rate] + padding
    assert offset == len(data), f"{path}: the last frame runs past the end of the file"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A task completes in about 0.9 s: long enough to see every stage, short for a test."""
    async with Simulator(speed=200, seed=7, details_rate_limit=NO_DETAILS_LIMIT) as simulator:
        yield simulator


@pytest.fixture
async def slow_sim() -> AsyncIterator[Simulator]:
    """Real-time: the lyrics arrive after 30 s, long after any of these tests is over."""
    async with Simulator(speed=1, seed=8) as simulator:
        yield simulator


async def submit_dead_callback(sim: Simulator) -> str:
    async with AddVocalsClient(
        sim.api_key, base_url=sim.base_url, callback_url=DEAD_CALLBACK
    ) as client:
        task = await client.add_vocals(**REQUEST)
        return task.task_id


# ---------------------------------------------------------------- an unreachable API
#
# With the default retry policy a read is tried 5 times with exponential backoff (about
# 15-19 s in all) before the CLI gives up: real backoff, so this child runs without the
# testing switch. The process starts with the module, so that wait overlaps the other
# tests; the test near the end collects its outcome.


@attrs.frozen
class Background:
    port: int
    outcome: Future[tuple[Run, float]]  # the run, and how long it took


def _collect(proc: subprocess.Popen[str], started: float) -> tuple[Run, float]:
    out, err = proc.communicate()
    return Run(proc.returncode, out, err), time.monotonic() - started


@pytest.fixture(scope="module", autouse=True)
def unreachable_status() -> Iterator[Background]:
    port = free_port()  # bound and released: nothing listens there now
    started = time.monotonic()
    proc = subprocess.Popen(
        [ADDVOCALS, "status", "some-task-id", "--base-url", f"http://127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(ADDVOCALS_API_KEY="K", ADDVOCALS_TESTING="0"),
    )
    executor = ThreadPoolExecutor(1, thread_name_prefix="unreachable-status")
    try:
        yield Background(port, executor.submit(_collect, proc, started))
    finally:
        if proc.poll() is None:
            proc.kill()
        executor.shutdown(wait=True)


# ---------------------------------------------------------------- help


_HELP_OPTIONS = {
    "submit": [
        *(f"--{f.name.replace('_', '-')}" for f in attrs.fields(AddVocalsRequest)),
        "--allow-unknown-model",
        "--wait",
        "--timeout",
        "--poll-interval",
        "--json",
        "--receiver-port",
        "--public-url",
        "--receiver-secret",
        "--api-key",
        "--base-url",
        "--provider",
        "--file",
        "--upload",
        "--serve-file",
        "ADDVOCALS_API_KEY",
    ],
    "wait": [
        "task_id",
        "--timeout",
        "--json",
        "--poll-interval",
        "--receiver-port",
        "--public-url",
    ],
    "status": ["task_id", "--json", "--api-key", "--base-url", "--provider"],
    "download": ["task_id", "--out", "--overwrite", "--images", "--api-key", "--base-url"],
    "credits": ["--json", "--api-key", "--base-url", "--provider"],
    "serve": ["--host", "--port", "--public-url", "--receiver-secret", "ADDVOCALS_RECEIVER_SECRET"],
    "simulate": ["--host", "--port", "--api-key", "--provider", "--speed", "--scenario", "--seed"],
    "demo": ["--out", "--speed"],
    "upload": ["PATH_OR_URL", "--name", "--json", "--api-key", "--base-url", "--provider"],
}


@pytest.mark.parametrize("command", sorted(_HELP_OPTIONS))
def test_each_command_help_lists_its_options(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: addvocals {command}")
    for option in _HELP_OPTIONS[command]:
        assert option in text, f"`addvocals {command} --help` does not mention {option}"


async def test_top_level_help_from_the_console_script_and_the_module() -> None:
    script, module = await asyncio.gather(
        run_cli("--help"),
        run_cli("--version", program=(sys.executable, "-m", "addvocals_async")),
    )
    assert script.code == 0, script
    assert script.err == ""
    for command in _HELP_OPTIONS:
        assert command in script.out
    assert "addvocals demo" in script.out  # the way in without an account
    assert module.code == 0, module
    assert module.out.startswith("addvocals ")


# ---------------------------------------------------------------- the API key


async def test_missing_api_key_is_one_line_naming_both_ways_to_give_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    script = await run_cli("credits")  # once as a real process: what a person sees
    monkeypatch.delenv("ADDVOCALS_API_KEY", raising=False)
    runs = [
        script,
        await run_main(capsys, "status", "abc"),
        await run_main(capsys, "wait", "abc", "--timeout", "1"),
        await run_main(capsys, "submit", *REQUEST_ARGS, "--callback-url", DEAD_CALLBACK),
        await run_main(capsys, "download", "abc", "--out", str(tmp_path / "out")),
    ]
    for run in runs:
        assert run.code == 2, run
        assert run.out == ""
        run.assert_one_error_line("--api-key", "ADDVOCALS_API_KEY")
    assert not (tmp_path / "out").exists()  # a failed download leaves nothing behind


async def test_api_key_is_never_echoed(
    sim: Simulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = ["--base-url", sim.base_url, "--api-key", SECRET_KEY]
    flagged = await run_cli("credits", *bad)  # a real process, as a person runs it
    polled = await run_main(capsys, "status", "abc", "--json", *bad)
    submitted = await run_main(
        capsys, "submit", *REQUEST_ARGS, "--wait", "--receiver-port", "0", *bad
    )
    monkeypatch.setenv("ADDVOCALS_API_KEY", SECRET_KEY)
    from_env = await run_main(capsys, "credits", "--base-url", sim.base_url)
    for run in (flagged, polled, submitted, from_env):
        assert run.code == 3, run
        assert SECRET_KEY not in run.out + run.err
        assert "Traceback" not in run.err
        assert "401" in run.err_lines[-1]
    flagged.assert_one_error_line("401")
    # Even --debug, which shows the traceback and debug logs, keeps the key out.
    debug = await run_cli("--debug", "credits", *bad)
    assert debug.code != 0
    assert SECRET_KEY not in debug.out + debug.err


# ---------------------------------------------------------------- invalid input


async def test_invalid_input_is_refused_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADDVOCALS_API_KEY", "K")
    # Nothing listens on the base URL: a request sent by mistake would show as exit 6.
    base = ["--base-url", f"http://127.0.0.1:{free_port()}", "--callback-url", DEAD_CALLBACK]
    short = ["--receiver-port", "0", "--receiver-secret", "short"]
    submit = ["submit", *REQUEST_ARGS, *base]
    weight = await run_main(capsys, *submit, "--style-weight", "0.615")
    gender = await run_main(capsys, *submit, "--vocal-gender", "x")
    model = await run_main(capsys, *submit, "--model", "V99")
    variety = await run_main(capsys, *submit, "--variety", "9")
    no_number = await run_main(capsys, *submit, "--audio-weight", "lots")
    no_callback = await run_main(
        capsys, "submit", *REQUEST_ARGS, "--base-url", "http://127.0.0.1:9"
    )
    secret = await run_main(capsys, "wait", "abc", *base[:2], *short)
    for run in (weight, gender, model, variety, no_number, no_callback, secret):
        assert run.code == 2, run
        assert run.out == ""
        assert "Traceback" not in run.err
    weight.assert_one_error_line("style_weight", "0.01")
    model.assert_one_error_line("V99", "--allow-unknown-model")
    variety.assert_one_error_line("variety", "0", "4")
    no_callback.assert_one_error_line("--callback-url", "--receiver-port")
    secret.assert_one_error_line("secret", "16 bytes")
    # argparse's own errors: the usage, then one line naming the option.
    assert "--vocal-gender" in gender.err_lines[-1]
    assert "invalid choice" in gender.err_lines[-1]
    assert "--audio-weight" in no_number.err_lines[-1]


async def test_allow_unknown_model_sends_it_and_the_api_decides(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["submit", *REQUEST_ARGS, *api(sim), "--callback-url", DEAD_CALLBACK, "--model", "V99"]
    run = await run_main(capsys, *args, "--allow-unknown-model")
    assert run.code == 3  # the simulated API knows no V99 either
    run.assert_one_error_line("400", "model")
    assert [r.json.get("model") for r in sim.submits()] == ["V99"]


# ---------------------------------------------------------------- a whole task, step by step


@pytest.mark.real_timing
async def test_credits_submit_status_wait_download(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = await run_main(capsys, "credits", *api(sim))
    assert (run.code, run.out) == (0, "1000 credits\n")
    run = await run_main(capsys, "credits", "--json", *api(sim))
    assert (run.code, json.loads(run.out)) == (0, {"credits": 1000})

    sim.script("lost_all")  # no callbacks at all: `wait` must find everything by polling
    run = await run_main(
        capsys, "submit", *REQUEST_ARGS, *api(sim), "--callback-url", DEAD_CALLBACK
    )
    assert run.code == 0, run.err
    first, second = run.out.splitlines()
    assert first.startswith("task id: ")
    task_id = first.removeprefix("task id: ")
    assert task_id in sim.tasks
    assert second == f"follow it with: addvocals wait {task_id}"
    assert sim.tasks[task_id].callback_url == DEAD_CALLBACK

    run = await run_main(capsys, "status", task_id, "--json", *api(sim))
    assert run.code == 0
    status = json.loads(run.out)
    assert status["task_id"] == task_id
    assert status["stage"] in ("pending", "text", "first")  # it completes only at ~0.9 s

    started = time.monotonic()
    waited = await run_main(
        capsys, "wait", task_id, "--json", "--timeout", "20", "--poll-interval", "0.5", *api(sim)
    )
    assert waited.code == 0, waited.err
    assert time.monotonic() - started < 8
    result = json.loads(waited.out)
    assert (result["task_id"], result["stage"], result["source"]) == (task_id, "complete", "poll")
    assert len(result["tracks"]) == 2
    assert all(track["audio_url"] for track in result["tracks"])
    assert waited.err == ""  # --json: stdout carries the result, stderr stays quiet

    run = await run_main(capsys, "status", task_id, *api(sim))
    assert run.out.splitlines()[0] == f"task {task_id}: SUCCESS (complete)"

    out = tmp_path / "tracks"
    run = await run_main(capsys, "download", task_id, "--out", str(out), *api(sim))
    assert run.code == 0, run.err
    paths = [Path(line) for line in run.out.splitlines()]
    assert sorted(paths) == sorted(out.glob("*.mp3"))
    assert {p.stem for p in paths} == {t["id"] for t in result["tracks"]}
    for path in paths:
        assert_valid_mp3(path)
    assert "\r" not in run.err  # progress bars only on a terminal
    assert [line.split()[0] for line in run.err_lines] == ["saved", "saved"]
    before = {p: p.read_bytes() for p in paths}

    again = await run_main(capsys, "download", task_id, "--out", str(out), *api(sim))
    assert again.code == 2
    again.assert_one_error_line("--overwrite", "exists")
    assert {p: p.read_bytes() for p in paths} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no .part

    forced = await run_main(
        capsys, "download", task_id, "--out", str(out), "--overwrite", "--images", *api(sim)
    )
    assert forced.code == 0, forced.err
    assert len(list(out.glob("*.mp3"))) == 2
    assert len(list(out.glob("*.jpeg"))) == 2


async def test_submit_wait_follows_callbacks_with_plain_lines_on_pipes(sim: Simulator) -> None:
    # Real poll timings in the child: no poll may come while the callbacks do.
    real_timing = clean_env(ADDVOCALS_TESTING="0")
    run = await run_cli(
        "submit", *REQUEST_ARGS, *api(sim), "--wait", "--receiver-port", "0", env=real_timing
    )
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].startswith("task id: ")
    task_id = lines[0].removeprefix("task id: ")
    assert lines[1] == f"task {task_id}: complete"
    track_ids = [t.id for t in sim.tasks[task_id].tracks]
    assert [line.split()[0] for line in lines[2:]] == track_ids
    # Not a terminal: no redraws, no escape codes, the stages as plain lines, in order.
    assert "\r" not in run.err
    assert "\x1b" not in run.err
    assert "Traceback" not in run.err
    # The receiver lives as long as this command: no warning about restart-safe secrets.
    assert "secret" not in run.err
    stages = [
        line.split(f"{task_id}: ", 1)[1] for line in run.err_lines if f"] {task_id}: " in line
    ]
    assert stages == STAGES
    assert any(line.startswith("  lyrics: ") for line in run.err_lines)
    # It was the callbacks, through the embedded receiver, not polling.
    assert [d.callback_type for d in sim.deliveries_for(task_id) if d.ok] == [
        "text",
        "first",
        "complete",
    ]
    assert sim.count(path=sim.profile.details_path) == 0


async def test_public_url_without_wait_needs_the_shared_secret(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --wait the URL is for another receiver (addvocals serve), which can only
    accept it with the same secret: a throwaway one would lose every callback."""
    public = ["--public-url", "http://127.0.0.1:9/addvocals"]
    run = await run_main(capsys, "submit", *REQUEST_ARGS, *api(sim), *public)
    assert run.code == 2
    run.assert_one_error_line("--receiver-secret", "ADDVOCALS_RECEIVER_SECRET")
    assert sim.submits() == []
    run = await run_main(
        capsys,
        "submit",
        *REQUEST_ARGS,
        *api(sim),
        *public,
        "--receiver-secret",
        "a-shared-secret-0123456789",
    )
    assert run.code == 0, run.err
    (task,) = sim.tasks.values()
    assert task.callback_url.startswith("http://127.0.0.1:9/addvocals/cb/")


async def test_download_of_a_failed_task_exits_4_saying_what_the_code_means(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Quick retries of the error callback to the dead URL: wait_idle need not sit out the
    # documented 1, 5 and 15 minutes (1.3 s at speed 1000).
    async with Simulator(
        provider="kie",
        speed=1000,
        seed=0,
        retry_delays=QUICK_RETRIES,
        details_rate_limit=NO_DETAILS_LIMIT,
    ) as sim:
        # A plain message: the meaning of 531 must come from the SDK, not the API's text.
        sim.script("error", error_code=531, error_message="Generation failed")
        run = await run_main(
            capsys, "submit", *REQUEST_ARGS, *api(sim), "--provider", "kie",
            "--callback-url", DEAD_CALLBACK, "--json",
        )  # fmt: skip
        task_id = json.loads(run.out)["task_id"]
        await sim.wait_idle()
        run = await run_main(
            capsys, "download", task_id, "--out", str(tmp_path / "out"), *api(sim),
            "--provider", "kie",
        )  # fmt: skip
    assert run.code == 4, run.err
    error = run.assert_one_error_line(task_id, "531")
    assert "refunded" in error  # kie's meaning of 531, as every wait reports it
    assert not (tmp_path / "out").exists()


async def test_failed_task_exits_4(sim: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    sim.script("error", error_code=451)
    run = await run_main(
        capsys, "submit", *REQUEST_ARGS, *api(sim), "--callback-url", DEAD_CALLBACK, "--json"
    )
    task_id = json.loads(run.out)["task_id"]
    assert task_id in sim.tasks
    run = await run_main(capsys, "wait", task_id, "--poll-interval", "0.5", *api(sim))
    assert run.code == 4, run.err
    assert run.out == ""
    error = run.err_lines[-1]
    assert error.startswith("addvocals: error: ")
    assert task_id in error
    assert "451" in error
    assert "Traceback" not in run.err


async def test_waiting_by_polling_says_so(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a receiver the next stage may be up to 30 s away: one line says why, and how
    to get the stages sooner, instead of a silent wait."""
    task_id = await submit_dead_callback(sim)
    run = await run_main(capsys, "wait", task_id, "--poll-interval", "0.5", *api(sim))
    assert run.code == 0, run.err
    (note,) = [line for line in run.err_lines if "polling" in line]
    assert "every 0.5 s" in note, note
    assert "--receiver-port" in note, note
    run = await run_main(capsys, "status", task_id, *api(sim))  # no wait, no such line
    assert "polling" not in run.err


async def test_wait_timeout_exits_5_and_says_how_to_resume(
    slow_sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = await submit_dead_callback(slow_sim)
    started = time.monotonic()
    run = await run_main(capsys, "wait", task_id, "--timeout", "0.5", *api(slow_sim))
    assert time.monotonic() - started < 5
    assert run.code == 5
    error = run.err_lines[-1]
    assert f"addvocals wait {task_id}" in error
    assert "0.5 s" in error
    assert "Traceback" not in run.err


@pytest.mark.parametrize(
    "receiver",
    [[], ["--receiver-port", "0", "--receiver-secret", "a-secret-of-24-bytes-xyz"]],
    ids=["poll", "recv"],
)
async def test_ctrl_c_during_wait(slow_sim: Simulator, receiver: list[str]) -> None:
    task_id = await submit_dead_callback(slow_sim)
    async with spawn("wait", task_id, *api(slow_sim), *receiver) as proc:
        assert proc.stderr is not None
        line = await read_line(proc.stderr)
        assert line.endswith(f"{task_id}: following (re-attached by id)\n"), line
        interrupted = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 5)
        assert time.monotonic() - interrupted < 3
    assert proc.returncode == 130
    assert out == b""
    *before, last_but_one, last = err.decode().splitlines()
    assert (last_but_one, last) == (
        "interrupted",
        f"the task goes on; resume with: addvocals wait {task_id}",
    )
    # Only the line that says the wait polls (no receiver) may come before it.
    assert len(before) == (0 if receiver else 1), before
    assert all(line.startswith("  no receiver in this process: polling") for line in before)


# ---------------------------------------------------------------- serve


async def test_serve_needs_a_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ADDVOCALS_RECEIVER_SECRET", raising=False)
    run = await run_main(capsys, "serve", "--port", str(free_port()))
    assert run.code == 2
    run.assert_one_error_line("--receiver-secret", "ADDVOCALS_RECEIVER_SECRET")
    run = await run_main(capsys, "serve", "--port", str(free_port()), "--secret", "short")
    assert run.code == 2
    run.assert_one_error_line("secret", "16 bytes")


async def test_serve_prints_each_genuine_callback_as_a_json_line() -> None:
    port, secret = free_port(), "serve-test-secret"
    public = f"http://127.0.0.1:{port}/addvocals"
    async with (
        Simulator(speed=200, seed=3) as sim,
        spawn("serve", "--port", str(port), "--secret", secret) as proc,
    ):
        banner = await read_line(proc.stderr)
        assert f"{public}/cb/" in banner, banner
        # The receivers only mint callback URLs; the serve process gets the callbacks.
        ours = CallbackReceiver(public_url=public, secret=secret)
        theirs = CallbackReceiver(public_url=public, secret="another-secret-of-the-same-length")
        async with (
            AddVocalsClient(sim.api_key, base_url=sim.base_url, receiver=ours) as client,
            AddVocalsClient(sim.api_key, base_url=sim.base_url, receiver=theirs) as other,
        ):
            request = AddVocalsRequest(**REQUEST)
            task = await client.add_vocals(request)
            forged = await other.add_vocals(request)
        records: list[dict[str, Any]] = []
        while not records or records[-1]["callback_type"] != "complete":
            records.append(json.loads(await read_line(proc.stdout)))
        # The other task's callbacks (all three are sent by now) must have printed nothing.
        deadline = time.monotonic() + 5
        while not sim.deliveries_for(forged.task_id, "complete"):
            assert time.monotonic() < deadline, "the other task's callbacks never came"
            await asyncio.sleep(0.05)
        proc.terminate()
        assert proc.stdout is not None
        rest = (await asyncio.wait_for(proc.stdout.read(), 5)).decode()
        await asyncio.wait_for(proc.wait(), 5)
    assert [r["callback_type"] for r in records] == ["text", "first", "complete"]
    assert {r["task_id"] for r in records} == {task.task_id}
    assert [r["code"] for r in records] == [200, 200, 200]
    assert len(records[-1]["tracks"]) == 2
    assert rest == ""
    refused = sim.deliveries_for(forged.task_id)
    assert [d.callback_type for d in refused if d.attempt == 0] == ["text", "first", "complete"]
    assert {d.status for d in refused} == {403}


# ---------------------------------------------------------------- simulate


async def _poll_to_success(base_url: str, key: str) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "uploadUrl": REQUEST["upload_url"],
        "prompt": "p",
        "title": "t",
        "style": "s",
        "negativeTags": "n",
        "callBackUrl": DEAD_CALLBACK,
    }
    async with aiohttp.ClientSession(base_url, headers=headers) as http:
        async with http.post("/api/v1/generate/add-vocals", json=body) as response:
            answer = await response.json()
        assert answer["code"] == 200, answer
        task_id = answer["data"]["taskId"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            async with http.get(
                "/api/v1/generate/record-info", params={"taskId": task_id}
            ) as response:
                details = await response.json()
            if details["code"] == 200 and details["data"]["status"] == "SUCCESS":
                data: dict[str, object] = details["data"]
                return data
            await asyncio.sleep(0.4)
    raise AssertionError(f"task {task_id} did not reach SUCCESS in 10 s")


async def test_simulate_serves_the_api_until_stopped() -> None:
    port, key = free_port(), "sim-test-key-123"
    # At speed 1000 a task is done in about 0.2 s: the second poll finds it.
    args = ["--port", str(port), "--api-key", key, "--speed", "1000"]
    async with spawn("simulate", *args) as proc:
        banner = await read_line(proc.stdout)
        assert f"http://127.0.0.1:{port}" in banner, banner
        data = await _poll_to_success(f"http://127.0.0.1:{port}", key)
        assert data["status"] == "SUCCESS"
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 5)


async def test_simulate_without_a_key_says_which_one_to_send() -> None:
    port = free_port()
    async with spawn("simulate", "--port", str(port), "--speed", "100") as proc:
        banner = await read_line(proc.stdout)
        assert f"http://127.0.0.1:{port}" in banner
        assert "sim-key" in banner  # the documented default, so a client knows what to send
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{port}/api/v1/generate/credit",
                headers={"Authorization": "Bearer sim-key"},
            ) as response,
        ):
            assert (await response.json())["code"] == 200


async def test_simulate_refuses_a_bad_scenario_or_speed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = await run_main(capsys, "simulate", "--port", "0", "--scenario", "bogus")
    assert run.code == 2
    run.assert_one_error_line("--scenario", "bogus", "lost_all")
    run = await run_main(capsys, "simulate", "--port", "0", "--speed", "0")
    assert run.code == 2
    run.assert_one_error_line("--speed")


# ---------------------------------------------------------------- demo


async def test_demo_writes_two_tracks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo-output"
    started = time.monotonic()
    run = await run_main(capsys, "demo", "--out", str(out), "--speed", "400")
    elapsed = time.monotonic() - started
    assert run.code == 0, run.err
    assert elapsed < 30
    assert "\r" not in run.out
    stages = [line.split(": ", 1)[1] for line in run.out.splitlines() if line.startswith("[")]
    assert stages == STAGES
    files = sorted(out.glob("*.mp3"))
    assert len(files) == 2
    for path in files:
        assert_valid_mp3(path)
        assert str(path) in run.out
    # How to do the same against the real API: a command that the CLI really accepts.
    assert "ADDVOCALS_API_KEY" in run.out
    hint = run.out[run.out.index("addvocals submit") :].replace("\\\n", " ").splitlines()[0]
    parsed = build_parser().parse_args(shlex.split(hint)[1:])
    assert (parsed.command, parsed.wait, parsed.receiver_port) == ("submit", True, 8080)


# ---------------------------------------------------------------- an unreachable API (end)


def test_unreachable_host_is_one_line_and_exit_6(unreachable_status: Background) -> None:
    run, elapsed = unreachable_status.outcome.result(timeout=60)
    assert run.code == 6, run
    assert run.out == ""
    line = run.assert_one_error_line("could not connect", str(unreachable_status.port))
    assert line.startswith("addvocals: error: ")
    assert "stamina" not in run.err  # no retry chatter
    # The default retry policy tries 5 times with backoff (about 15-19 s): slow, but bounded.
    assert elapsed < 40, f"giving up on an unreachable host took {elapsed:.0f} s"


async def test_doctor_says_whether_the_public_url_reaches_a_receiver_here(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fine = await run_main(capsys, "doctor", "--port", "0", "--json")
    assert fine.code == 0, fine
    report = json.loads(fine.out)
    assert report["reachable"] is True
    assert report["seconds"] is not None
    dead = f"http://127.0.0.1:{free_port()}/addvocals"  # nothing listens there
    wrong = await run_main(capsys, "doctor", "--port", "0", "--public-url", dead, "--timeout", "2")
    assert wrong.code == 6, wrong
    assert "NOT reachable" in wrong.out
    assert dead in wrong.out


async def test_a_provider_that_does_not_match_the_host_is_named_in_the_error(
    sim: Simulator, capsys: pytest.CaptureFixture[str]
) -> None:
    run = await run_main(capsys, "credits", *api(sim), "--provider", "kie")  # an apibox host
    assert run.code == 3
    run.assert_one_error_line("404", "--provider", "--base-url")
    run = await run_main(capsys, "status", "no-such-task", *api(sim))
    assert run.code == 3
    line = run.assert_one_error_line("404", "no-such-task")
    assert "--provider" not in line  # an unknown task is not a wrong host
