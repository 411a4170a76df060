"""The ``addvocals`` command line (also ``python -m addvocals_async``).

Every command prints one clear line on failure (a traceback only with ``--debug``) and
exits with a code that says what went wrong:

    0  done                       4  the task failed
    1  unexpected error           5  a wait timed out
    2  invalid input or usage     6  network trouble (API unreachable, connection lost)
    3  the API refused            130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs
import stamina.instrumentation

from .._client import API_KEY_ENV, AddVocalsClient, RetryPolicy
from .._errors import (
    AddVocalsError,
    APIConnectionError,
    APIError,
    ReceiverClosedError,
    RequestValidationError,
    TaskFailedError,
    TaskTimeoutError,
)
from .._models import Stage, TaskResult, Track, UncheckedModel
from .._providers import PROVIDERS
from .._receiver import SECRET_ENV, CallbackReceiver
from .._tasks import PollPolicy, VocalTask
from .._version import __version__

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_API, EXIT_FAILED, EXIT_TIMEOUT, EXIT_NETWORK = range(7)
EXIT_INTERRUPTED = 130

_STAGE_WORDS = {
    Stage.PENDING: "submitted",
    Stage.TEXT: "lyrics written",
    Stage.FIRST: "first track ready",
    Stage.COMPLETE: "complete",
    Stage.FAILED: "failed",
}


class CLIError(Exception):
    """A problem the user can fix, shown as one line with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- output


class Progress:
    """Shows a task's stages as they arrive: one redrawn line on a terminal, plain lines
    elsewhere (pipes, CI logs)."""

    def __init__(self, stream: TextIO, *, quiet: bool = False) -> None:
        self.stream = stream
        self.live = stream.isatty() and not quiet
        self.quiet = quiet
        self.started = time.monotonic()
        self._last = ""

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.started:5.1f}s"

    def stage(self, task_id: str, stage: Stage) -> None:
        self.line(f"[{self.elapsed()}] {task_id}: {_STAGE_WORDS.get(stage, stage.value)}")

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self.live and self._last:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        self._last = ""

    def redraw(self, text: str) -> None:
        """A transient status line (terminal only)."""
        if self.live:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._last = text

    def done(self) -> None:
        if self.live and self._last:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._last = ""


def _track_json(track: Track) -> dict[str, Any]:
    data = attrs.asdict(track)
    data["create_time"] = track.create_time.isoformat() if track.create_time else None
    return data


def _result_json(result: TaskResult) -> dict[str, Any]:
    return {
        "task_id": result.task_id,
        "stage": result.stage.value,
        "source": result.source,
        "tracks": [_track_json(t) for t in result.tracks],
    }


def _print_result(result: TaskResult, out: TextIO) -> None:
    out.write(f"task {result.task_id}: {_STAGE_WORDS[result.stage]}\n")
    for track in result.tracks:
        length = f"{track.duration:.1f}s" if track.duration is not None else "?"
        out.write(f"  {track.id}  {length:>7}  {track.audio_url or track.stream_audio_url}\n")


# ---------------------------------------------------------------- client set-up


def _api_key(args: argparse.Namespace) -> str:
    key = args.api_key or os.environ.get(API_KEY_ENV)
    if not key:
        raise CLIError(
            f"no API key: pass --api-key KEY or set {API_KEY_ENV} "
            "(get one from your provider's dashboard; `addvocals demo` needs none)"
        )
    return str(key)


def _client(args: argparse.Namespace, receiver: CallbackReceiver | None = None) -> AddVocalsClient:
    interval = getattr(args, "poll_interval", None)
    poll = None
    if interval is not None:
        poll = PollPolicy(initial=interval, maximum=interval, min_interval=min(interval, 1.0))
    return AddVocalsClient(
        _api_key(args),
        provider=args.provider,
        base_url=args.base_url,
        receiver=receiver,
        request_timeout=args.request_timeout,
        poll=poll,
        # A person is waiting: three tries in a few seconds, not five over fifteen.
        retry=RetryPolicy(attempts=3, wait_max=5.0),
    )


def _receiver(args: argparse.Namespace, *, serves_here: bool) -> CallbackReceiver | None:
    """The receiver the options ask for. ``serves_here``: it receives in this process while
    the command runs, so a throwaway secret does; otherwise it only mints the callback URL
    for another process (``addvocals serve``), which must share the secret."""
    if getattr(args, "receiver_port", None) is None and not getattr(args, "public_url", None):
        return None
    secret = args.receiver_secret or os.environ.get(SECRET_ENV)
    if not secret:
        if not serves_here:
            raise CLIError(
                "--public-url without --wait makes a callback URL for another receiver "
                "(addvocals serve): give both the same --receiver-secret, or set "
                f"{SECRET_ENV}"
            )
        secret = secrets.token_urlsafe(32)
    return _make_receiver(
        host=args.receiver_host,
        port=args.receiver_port or 0,
        public_url=args.public_url,
        secret=secret,
    )


def _make_receiver(**options: Any) -> CallbackReceiver:
    """A receiver, with a bad setting (short secret, relative public URL) as a usage error."""
    try:
        return CallbackReceiver(**options)
    except ValueError as exc:
        raise CLIError(f"invalid receiver setting: {exc}") from None


async def _follow(task: VocalTask, progress: Progress, timeout: float | None) -> TaskResult:
    """Show each stage as it arrives, with the lyrics once a track carries them."""
    lyrics_shown = False
    progress.stage(task.task_id, Stage.PENDING)
    ticker = asyncio.ensure_future(_tick(task, progress))
    try:
        async for event in task.events(timeout=timeout):
            stage = event.stage
            if stage is None:
                continue
            progress.stage(task.task_id, stage)
            if not lyrics_shown:
                lyrics = next((t.prompt for t in event.tracks if t.prompt), None)
                if lyrics:
                    progress.line("  lyrics: " + lyrics.replace("\n", "\n          "))
                    lyrics_shown = True
        return await task.complete(timeout=0)
    finally:
        ticker.cancel()
        progress.done()


async def _tick(task: VocalTask, progress: Progress) -> None:
    while True:
        progress.redraw(f"[{progress.elapsed()}] {task.task_id}: waiting ({task.stage.value})")
        await asyncio.sleep(0.5)


# ---------------------------------------------------------------- commands


async def cmd_submit(args: argparse.Namespace, out: TextIO) -> int:
    receiver = _receiver(args, serves_here=args.wait) if (args.wait or args.public_url) else None
    fields = {
        name: getattr(args, name)
        for name in (
            "upload_url",
            "prompt",
            "title",
            "style",
            "negative_tags",
            "vocal_gender",
            "style_weight",
            "weirdness_constraint",
            "audio_weight",
            "lyrics",
            "variety",
            "callback_url",
        )
    }
    if args.model:
        fields["model"] = UncheckedModel(args.model) if args.allow_unknown_model else args.model
    if receiver is not None and args.wait:
        await receiver.start()
    try:
        async with _client(args, receiver) as client:
            task = await client.add_vocals(**fields)
            out.write(f"{task.task_id}\n" if args.json else f"task id: {task.task_id}\n")
            out.flush()
            if not args.wait:
                if not args.json:
                    out.write(f"follow it with: addvocals wait {task.task_id}\n")
                return EXIT_OK
            result = await _follow(task, Progress(sys.stderr, quiet=args.json), args.timeout)
            _emit(result, args, out)
            return EXIT_OK
    finally:
        if receiver is not None:
            await receiver.aclose()


async def cmd_wait(args: argparse.Namespace, out: TextIO) -> int:
    receiver = _receiver(args, serves_here=True)
    if receiver is not None:
        await receiver.start()
    try:
        async with _client(args, receiver) as client:
            task = client.task(args.task_id)
            result = await _follow(task, Progress(sys.stderr, quiet=args.json), args.timeout)
            _emit(result, args, out)
            return EXIT_OK
    finally:
        if receiver is not None:
            await receiver.aclose()


def _emit(result: TaskResult, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        out.write(json.dumps(_result_json(result)) + "\n")
    else:
        _print_result(result, out)


async def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    async with _client(args) as client:
        details = await client.get_details(args.task_id)
    stage = details.stage
    if args.json:
        out.write(
            json.dumps(
                {
                    "task_id": details.task_id,
                    "status": details.status,
                    "stage": stage.value if stage else None,
                    "error_code": details.error_code,
                    "error_message": details.error_message,
                    "tracks": [_track_json(t) for t in details.tracks],
                }
            )
            + "\n"
        )
    else:
        out.write(f"task {details.task_id}: {details.status or 'unknown'}")
        out.write(f" ({_STAGE_WORDS[stage]})\n" if stage else "\n")
        if details.error_code is not None or details.error_message:
            out.write(f"  error {details.error_code}: {details.error_message or ''}\n")
        for track in details.tracks:
            out.write(f"  {track.id}  {track.audio_url or '(not final yet)'}\n")
    return EXIT_OK


async def cmd_download(args: argparse.Namespace, out: TextIO) -> int:
    dest = Path(args.out)
    async with _client(args) as client:
        task = client.task(args.task_id)
        details = await task.refresh()
        if task.failure is not None:  # built as every wait builds it, code meaning included
            raise task.failure
        tracks = [t for t in details.tracks if t.audio_url]
        if not tracks:
            raise CLIError(
                f"task {args.task_id} has no finished tracks yet (status {details.status or '?'}); "
                f"try: addvocals wait {args.task_id}",
                EXIT_API,
            )
        dest.mkdir(parents=True, exist_ok=True)  # only now: a failed command leaves nothing
        for path in await download_tracks(
            client, tracks, dest, overwrite=args.overwrite, images=args.images, stream=sys.stderr
        ):
            out.write(f"{path}\n")
    return EXIT_OK


async def download_tracks(
    client: AddVocalsClient,
    tracks: Sequence[Track],
    dest: Path,
    *,
    overwrite: bool,
    images: bool = False,
    stream: TextIO,
) -> list[Path]:
    """Download every track (and, if asked, its cover) into ``dest`` with a progress line."""
    progress = Progress(stream)
    written: list[Path] = []
    for track in tracks:
        kinds = ["audio", "image"] if images and track.image_url else ["audio"]
        for kind in kinds:
            name = f"{track.id} {kind}"

            def report(received: int, total: int | None, name: str = name) -> None:
                if total:
                    width = 24
                    filled = int(width * received / total)
                    bar = "#" * filled + "-" * (width - filled)
                    progress.redraw(f"{name} [{bar}] {received * 100 // total:3d}%")
                else:
                    progress.redraw(f"{name} {received} bytes")

            path = await client.download(
                track, dest, kind=kind, overwrite=overwrite, progress=report
            )
            progress.line(f"saved {path} ({path.stat().st_size} bytes)")
            written.append(path)
    return written


async def cmd_credits(args: argparse.Namespace, out: TextIO) -> int:
    async with _client(args) as client:
        credits = await client.get_credits()
    out.write(json.dumps({"credits": credits}) + "\n" if args.json else f"{credits} credits\n")
    return EXIT_OK


async def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    def emit(event: Any) -> None:
        record = {
            "task_id": event.task_id,
            "callback_type": event.callback_type,
            "code": event.code,
            "msg": event.msg,
            "tracks": [_track_json(t) for t in event.tracks],
        }
        out.write(json.dumps(record) + "\n")
        out.flush()

    if not (args.secret or os.environ.get(SECRET_ENV)):
        raise CLIError(
            f"serve needs the receiver secret the tasks were submitted with: pass --secret or set "
            f"{SECRET_ENV} (and submit with the same one: addvocals submit --public-url URL)"
        )
    receiver = _make_receiver(
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        secret=args.secret,
        on_event=emit,
        on_unclaimed=emit,
    )
    async with receiver:
        sys.stderr.write(f"receiving callbacks at {receiver.url}/cb/<token> (Ctrl-C to stop)\n")
        sys.stderr.flush()
        await asyncio.Event().wait()
    return EXIT_OK


async def cmd_simulate(args: argparse.Namespace, out: TextIO) -> int:
    from ..testing import SCENARIOS, serve_forever

    if args.scenario not in SCENARIOS:
        raise CLIError(f"unknown --scenario {args.scenario!r}; one of: {', '.join(SCENARIOS)}")
    if not args.speed > 0:
        raise CLIError(f"--speed must be positive, got {args.speed:g}")
    await serve_forever(
        host=args.host,
        port=args.port,
        api_key=args.api_key or "sim-key",
        provider=args.provider,
        speed=args.speed,
        scenario=args.scenario,
        seed=args.seed,
        webhook_hmac_key=args.webhook_hmac_key,
        out=out,
    )
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from ._demo import run_demo

    await run_demo(Path(args.out), speed=args.speed, out=out)
    return EXIT_OK


# ---------------------------------------------------------------- parser


def _weight(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _add_api_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("API")
    group.add_argument("--api-key", help=f"API key (default: ${API_KEY_ENV}); never printed")
    group.add_argument(
        "--provider",
        choices=sorted(PROVIDERS),
        default="apibox",
        help="which reseller of the API (default: apibox)",
    )
    group.add_argument("--base-url", help="override the provider's base URL (e.g. a simulator)")
    group.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="timeout of each HTTP request (default: 30)",
    )


def _poll_interval(text: str) -> float:
    value = _weight(text)
    if not value >= 0.5:
        raise argparse.ArgumentTypeError(f"{text} is too often: poll at most twice a second")
    return value


def _add_receiver_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "callback receiver (optional; without one the task is polled)"
    )
    group.add_argument(
        "--poll-interval",
        type=_poll_interval,
        metavar="SECONDS",
        help="poll the task this often (default: every 10 s, growing to 30 s; at least 0.5)",
    )
    group.add_argument(
        "--receiver-port",
        type=int,
        metavar="PORT",
        help="run an embedded receiver on this port (0: any free port)",
    )
    group.add_argument(
        "--receiver-host",
        default="127.0.0.1",
        help="address the receiver binds (default: 127.0.0.1)",
    )
    group.add_argument(
        "--public-url",
        help="the receiver's public base URL, as the API reaches it "
        "(behind a reverse proxy or tunnel)",
    )
    group.add_argument(
        "--receiver-secret",
        default=None,
        help=f"secret of the callback URL tokens (default: ${SECRET_ENV})",
    )


def _add_follow_options(parser: argparse.ArgumentParser, *, timeout_help: str) -> None:
    """What following a task takes (submit --wait, wait): a deadline, the output form,
    the API and, optionally, a receiver."""
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"{timeout_help} (default: 20 minutes)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    _add_api_options(parser)
    _add_receiver_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="addvocals",
        description="Add AI vocals to an instrumental with the Add Vocals API.",
        epilog="Try it without an account: addvocals demo. Exit codes: 0 ok, 2 invalid input, "
        "3 API error, 4 task failed, 5 timeout, 6 network, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"addvocals {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "submit",
        help="submit an instrumental for vocals",
        description="Submit an instrumental; prints the task id first.",
    )
    p.add_argument("--upload-url", required=True, help="public URL of the instrumental (MP3, WAV)")
    p.add_argument("--prompt", required=True, help="what the vocals should sing and how")
    p.add_argument("--title", required=True, help="the song title")
    p.add_argument("--style", required=True, help='genre and vocal approach, e.g. "Neo Soul"')
    p.add_argument("--negative-tags", required=True, help="comma-separated styles to avoid")
    p.add_argument("--vocal-gender", choices=["m", "f"], help="preferred vocal gender")
    p.add_argument("--style-weight", type=_weight, help="0..1 in steps of 0.01")
    p.add_argument("--weirdness-constraint", type=_weight, help="0..1 in steps of 0.01")
    p.add_argument("--audio-weight", type=_weight, help="0..1 in steps of 0.01")
    p.add_argument("--model", help="model (default: the provider's), e.g. V5, V4_5PLUS, V6")
    p.add_argument(
        "--allow-unknown-model",
        action="store_true",
        help="send a --model this release does not know yet",
    )
    p.add_argument("--lyrics", help="lyrics to sing (newer models)")
    p.add_argument("--variety", type=int, help="0 (off) to 4 (max), newer models")
    p.add_argument("--callback-url", help="where the API posts callbacks (if not --public-url)")
    p.add_argument("--wait", action="store_true", help="follow the task until it completes")
    _add_follow_options(p, timeout_help="with --wait: give up after this long")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "wait",
        help="follow a task until it completes",
        description="Re-attach to a task and wait for it; polls unless "
        "--receiver-port/--public-url give a receiver.",
    )
    p.add_argument("task_id")
    _add_follow_options(p, timeout_help="give up after this long")
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser(
        "status",
        help="show a task's status once",
        description="Ask the details endpoint about a task.",
    )
    p.add_argument("task_id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_api_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "download",
        help="download a finished task's tracks",
        description="Download every finished track of a task.",
    )
    p.add_argument("task_id")
    p.add_argument("--out", default=".", metavar="DIR", help="directory to write to (default: .)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--images", action="store_true", help="also download the cover images")
    _add_api_options(p)
    p.set_defaults(func=cmd_download)

    p = sub.add_parser(
        "credits",
        help="show the account's remaining credits",
        description="Show the account's remaining credits.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_api_options(p)
    p.set_defaults(func=cmd_credits)

    p = sub.add_parser(
        "serve",
        help="run the callback receiver alone, printing callbacks as JSON",
        description="Receive callbacks for tasks submitted with the same secret "
        "and print each genuine one as a JSON line on stdout.",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="bind port (default: 8080)")
    p.add_argument("--public-url", help="the public base URL the API reaches")
    p.add_argument("--secret", help=f"receiver secret (default: ${SECRET_ENV})")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "simulate",
        help="run the API simulator for testing",
        description="Serve a simulator of the Add Vocals API on this machine.",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8181, help="bind port (default: 8181)")
    p.add_argument("--api-key", default=None, help="the key clients must send (default: sim-key)")
    p.add_argument(
        "--provider",
        choices=sorted(PROVIDERS),
        default="apibox",
        help="which provider to imitate (default: apibox)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="time compression; 60 runs a 3-minute task in 3 s (default: 60)",
    )
    p.add_argument("--scenario", default="normal", help="default scenario (see the README)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible runs")
    p.add_argument("--webhook-hmac-key", default=None, help="kie: sign callbacks with this key")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "demo",
        help="the whole flow on the built-in simulator, no key needed",
        description="Start the simulator and a receiver, submit a task, watch "
        "its stages and download both tracks.",
    )
    p.add_argument(
        "--out",
        default="demo-output",
        metavar="DIR",
        help="where to write the tracks (default: ./demo-output)",
    )
    p.add_argument(
        "--speed", type=float, default=40.0, help="time compression of the simulator (default: 40)"
    )
    p.set_defaults(func=cmd_demo)
    return parser


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, (RequestValidationError, CLIError)):
        return exc.code if isinstance(exc, CLIError) else EXIT_USAGE
    if isinstance(exc, TaskFailedError):
        return EXIT_FAILED
    if isinstance(exc, TaskTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, FileExistsError):
        return EXIT_USAGE  # a download refusing to overwrite: the user's call, not the network
    if isinstance(exc, (APIConnectionError, ReceiverClosedError, OSError)):
        return EXIT_NETWORK
    if isinstance(exc, APIError):
        return EXIT_API
    return EXIT_ERROR


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TaskTimeoutError):
        after = f" after {exc.timeout:g} s" if exc.timeout is not None else ""
        return (
            f"task {exc.task_id} is not complete{after} (it may still finish); "
            f"resume with: addvocals wait {exc.task_id}"
        )
    if isinstance(exc, FileExistsError) and exc.errno is None:
        # The SDK's refusal to overwrite: "<path> exists; pass overwrite=True ..."
        what = str(exc.args[0]).split(";")[0] if exc.args else "the file exists"
        return f"{what}; pass --overwrite to replace it"
    if isinstance(exc, RequestValidationError) and exc.field == "model":
        rule = exc.rule.split(";")[0]
        return f"--model {exc.value}: {rule}; pass --allow-unknown-model to send it anyway"
    if isinstance(exc, RequestValidationError) and exc.field == "callback_url" and not exc.value:
        return (
            "the API needs a callback URL: pass --callback-url URL, or --wait with "
            "--receiver-port PORT (and --public-url URL when the API cannot reach this machine)"
        )
    if isinstance(exc, (AddVocalsError, CLIError, OSError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    stream = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        import logging

        logging.basicConfig(level=logging.DEBUG)
    func: Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]] = args.func
    # stamina announces each scheduled retry ("stamina.retry_scheduled") on stderr, or on
    # stdout with structlog installed: noise for a person, and it would corrupt --json.
    retry_hooks = stamina.instrumentation.get_on_retry_hooks()
    if not args.debug:
        stamina.instrumentation.set_on_retry_hooks([])
    try:
        return asyncio.run(func(args, stream))
    except KeyboardInterrupt:
        # On a terminal, end the line the ^C echo left; on a pipe, one plain line.
        sys.stderr.write(("\n" if sys.stderr.isatty() else "") + "interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        sys.stderr.write(f"addvocals: error: {_describe(exc)}\n")
        return _exit_code(exc)
    finally:
        stamina.instrumentation.set_on_retry_hooks(retry_hooks)
