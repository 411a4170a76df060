"""One async function per subcommand: ``cmd_<name>(args, out) -> exit code``.

``out`` is where results go (stdout, or what ``main(out=...)`` was given); progress and
notices go to stderr, so ``--json`` output stays clean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TextIO

import attrs

from .. import AddVocalsClient, CallbackReceiver, PollPolicy, RetryPolicy, UncheckedModel
from .._config import API_KEY_ENV, SECRET_ENV
from ..testing._command import run as run_simulator
from ._demo import run_demo
from ._output import (
    EXIT_API,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_USAGE,
    STAGE_WORDS,
    CLIError,
    Progress,
    TransferBar,
    download_tracks,
    emit,
    follow,
    local_files,
    track_json,
)

__all__ = [
    "Command",
    "cmd_credits",
    "cmd_demo",
    "cmd_download",
    "cmd_serve",
    "cmd_simulate",
    "cmd_status",
    "cmd_submit",
    "cmd_upload",
    "cmd_wait",
]

Command = Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]]
"""What each subcommand runs: the parsed options and the output stream in, an exit code out."""


# ---------------------------------------------------------------- client set-up


def _api_key(args: argparse.Namespace) -> str:
    key = args.api_key or os.environ.get(API_KEY_ENV)
    if key and not key.strip():
        # --api-key is refused blank by the parser; a blank variable is refused here.
        raise CLIError(f"{API_KEY_ENV} is set but blank: set it to your API key, or unset it")
    if not key:
        raise CLIError(
            f"no API key: pass --api-key KEY or set {API_KEY_ENV} "
            "(get one from your provider's dashboard; `addvocals demo` needs none)"
        )
    return str(key)


def _client(args: argparse.Namespace, receiver: CallbackReceiver | None = None) -> AddVocalsClient:
    interval = getattr(args, "poll_interval", None)
    # A person at a prompt: an API that refuses every poll is said at once (exit 6), not
    # after the 20-minute deadline as a slow task.
    poll = PollPolicy(give_up_unreachable=True)
    if interval is not None:
        poll = attrs.evolve(
            poll, initial=interval, maximum=interval, min_interval=min(interval, 1.0)
        )
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
    if getattr(args, "redis", None):
        return _redis_worker(args)
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


def _redis_backend(url: str, prefix: str | None) -> Any:
    """A ``RedisBackend`` for ``--redis URL``; a usage error without redis-py or for a URL
    that is none (named without its password)."""
    try:
        from ..redis import DEFAULT_PREFIX, RedisBackend
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    try:
        return RedisBackend(url, prefix=prefix or DEFAULT_PREFIX)
    except ValueError as exc:
        raise CLIError(f"--redis: {exc}") from None


def _redis_worker(args: argparse.Namespace) -> CallbackReceiver:
    """``--redis URL``: a receiver that never serves here. It mints callback URLs on the
    receiver tier's public URL (``addvocals serve --redis URL``) and hears, through Redis,
    the callbacks any receiver of the tier takes for the task awaited here."""
    secret = args.receiver_secret or os.environ.get(SECRET_ENV)
    if not args.public_url or not secret:
        raise CLIError(
            "--redis needs --public-url (the receiver tier's address, as the API reaches it) "
            f"and the tier's secret (--receiver-secret or {SECRET_ENV})"
        )
    return _make_receiver(
        public_url=args.public_url,
        secret=secret,
        backend=_redis_backend(args.redis, args.redis_prefix),
    )


def _make_receiver(**options: Any) -> CallbackReceiver:
    """A receiver, with a bad setting (short secret, relative public URL) as a usage error."""
    try:
        return CallbackReceiver(**options)
    except ValueError as exc:
        raise CLIError(f"invalid receiver setting: {exc}") from None


# ---------------------------------------------------------------- commands


async def cmd_submit(args: argparse.Namespace, out: TextIO) -> int:
    receiver = (
        _receiver(args, serves_here=args.wait)
        if (args.wait or args.public_url or args.redis)
        else None
    )
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
    if (args.upload or args.serve_file) and not args.file:
        raise CLIError("--upload and --serve-file say how to send a --file: give one")
    if receiver is not None and args.wait and not args.redis:
        await receiver.start()
    try:
        async with _client(args, receiver) as client:
            if args.file:
                fields.update(_file_fields(args, client, receiver))
            task = await client.add_vocals(**fields)
            progress_done = fields.get("upload_progress")
            if isinstance(progress_done, TransferBar):
                progress_done.progress.done()
            if args.json:  # one JSON document per line, the result's line after it
                out.write(json.dumps({"task_id": task.task_id, "stage": "pending"}) + "\n")
            else:
                out.write(f"task id: {task.task_id}\n")
            out.flush()
            if not args.wait:
                if not args.json:
                    out.write(f"follow it with: addvocals wait {task.task_id}\n")
                return EXIT_OK
            args.following = task.task_id  # Ctrl-C from here on: say how to resume
            result = await follow(
                task,
                Progress(sys.stderr, quiet=args.json),
                args.timeout,
                note=_polling_note(args) if receiver is None else None,
            )
            emit(result, out, as_json=args.json)
            return EXIT_OK
    finally:
        if receiver is not None:
            await receiver.aclose()


def _polling_note(args: argparse.Namespace) -> str:
    """Why nothing shows for a while: without a receiver here, stages come by polling."""
    interval = getattr(args, "poll_interval", None)
    every = (
        f"every {interval:g} s"
        if interval is not None
        else "every 4 s around when each stage is usually reached, up to 30 s away from it"
    )
    return (
        f"  no receiver in this process: polling the API {every} (--poll-interval; "
        "--receiver-port and --public-url get each stage as it happens)"
    )


def _file_fields(
    args: argparse.Namespace, client: AddVocalsClient, receiver: CallbackReceiver | None
) -> dict[str, Any]:
    """``add_vocals`` arguments for ``--file``: the provider's upload when it has one (or
    ``--upload``), else (or with ``--serve-file``) the receiver serves it, which needs the
    receiver up until the API has fetched it: ``--wait`` and a receiver."""
    path = Path(args.file)
    via = "serve" if args.serve_file else "upload" if args.upload else "auto"
    if via == "auto":
        via = "upload" if client.profile.can_upload else "serve"
    if via == "serve" and (receiver is None or not args.wait):
        why = (
            f"the {client.profile.name} provider has no upload API, so the file is "
            if not args.serve_file
            else "--serve-file: the file is "
        )
        raise CLIError(
            why + "served from this machine until the API fetches it: add --wait and "
            "--receiver-port PORT (and --public-url URL when the API cannot reach this machine)"
        )
    if via == "serve" and args.redis:
        # The file table lives in the process that registered the file; the URL would
        # name the receiver tier, which has no such file: the API's fetch would get 403.
        raise CLIError(
            "--redis: the receiver tier cannot serve a file of this machine; "
            + (
                "use --upload"
                if client.profile.can_upload
                else f"the {client.profile.name} provider has no upload API: host the file "
                "and pass --upload-url, or run without --redis"
            )
        )
    fields: dict[str, Any] = {"upload_url": None, "audio": path, "audio_via": via}
    if via == "upload":
        fields["upload_progress"] = TransferBar(
            Progress(sys.stderr, quiet=args.json), f"uploading {path.name}"
        )
    return fields


async def cmd_upload(args: argparse.Namespace, out: TextIO) -> int:
    """Upload a file (or a URL) to the provider's file host; print the URL to submit."""
    source: str = args.path
    async with _client(args) as client:
        if source.lower().startswith(("http://", "https://")):
            uploaded = await client.upload_from_url(source, file_name=args.name)
        else:
            progress = Progress(sys.stderr, quiet=args.json)
            bar = TransferBar(progress, f"uploading {Path(source).name}")
            try:
                uploaded = await client.upload(Path(source), args.name, progress=bar)
            finally:
                progress.done()
    expires = uploaded.expires_at.isoformat() if uploaded.expires_at else None
    if args.json:
        record = {
            "url": uploaded.url,
            "file_url": uploaded.file_url,
            "download_url": uploaded.download_url,
            "expires_at": expires,
            "size": uploaded.size,
            "mime_type": uploaded.mime_type,
        }
        out.write(json.dumps(record) + "\n")
    else:
        out.write(f"{uploaded.url}\n")
        if expires:
            sys.stderr.write(f"expires {expires}: submit with --upload-url before then\n")
    return EXIT_OK


async def cmd_wait(args: argparse.Namespace, out: TextIO) -> int:
    receiver = _receiver(args, serves_here=True)
    if receiver is not None and not args.redis:
        await receiver.start()
    try:
        async with _client(args, receiver) as client:
            task = client.task(args.task_id)
            args.following = task.task_id
            result = await follow(
                task,
                Progress(sys.stderr, quiet=args.json),
                args.timeout,
                note=_polling_note(args) if receiver is None else None,
                reattached=True,
            )
            emit(result, out, as_json=args.json)
            return EXIT_OK
    finally:
        if receiver is not None:
            await receiver.aclose()


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
                    "tracks": [track_json(t) for t in details.tracks],
                }
            )
            + "\n"
        )
    else:
        out.write(f"task {details.task_id}: {details.status or 'unknown'}")
        out.write(f" ({STAGE_WORDS[stage]})\n" if stage else "\n")
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
        with local_files(dest):  # only now: a failed command leaves nothing
            dest.mkdir(parents=True, exist_ok=True)
        # The paths go to stdout (for scripts); on a terminal, where stderr shows too, the
        # progress line does not print them a second time.
        for path in await download_tracks(
            client,
            tracks,
            dest,
            overwrite=args.overwrite,
            skip_existing=args.skip_existing,
            images=args.images,
            stream=sys.stderr,
            announce=not _isatty(out),
        ):
            out.write(f"{path}\n")
    return EXIT_OK


async def cmd_credits(args: argparse.Namespace, out: TextIO) -> int:
    async with _client(args) as client:
        credits = await client.get_credits()
    out.write(json.dumps({"credits": credits}) + "\n" if args.json else f"{credits} credits\n")
    return EXIT_OK


async def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    def emit_event(event: Any) -> None:
        record = {
            "task_id": event.task_id,
            "callback_type": event.callback_type,
            "code": event.code,
            "msg": event.msg,
            "tracks": [track_json(t) for t in event.tracks],
        }
        out.write(json.dumps(record) + "\n")
        out.flush()

    if not (args.receiver_secret or os.environ.get(SECRET_ENV)):
        raise CLIError(
            "serve needs the receiver secret the tasks were submitted with: pass "
            f"--receiver-secret or set {SECRET_ENV} (and submit with the same one: "
            "addvocals submit --public-url URL --receiver-secret ...)"
        )
    options: dict[str, Any] = {}
    if args.redis:
        # A receiver tier: it awaits nothing itself and publishes every genuine callback
        # to Redis, where the awaiting workers (submit/wait --redis URL) hear it.
        options["backend"] = _redis_backend(args.redis, args.redis_prefix)
    receiver = _make_receiver(
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        secret=args.receiver_secret,
        on_event=emit_event,
        on_unclaimed=emit_event,
        **options,
    )
    backend = options.get("backend")
    async with receiver, stop_signals() as stopped:
        if backend is not None:
            sys.stderr.write(f"publishing every genuine callback to Redis at {backend.url}\n")
        sys.stderr.write(f"receiving callbacks at {receiver.url}/cb/<token> (Ctrl-C to stop)\n")
        sys.stderr.flush()
        signum = await stopped
        # Leaving `async with receiver` drains: callbacks in flight are answered first.
        sys.stderr.write(f"{signal.Signals(signum).name}: draining, then stopping\n")
        sys.stderr.flush()
    return EXIT_OK


@contextlib.asynccontextmanager
async def stop_signals() -> AsyncIterator[asyncio.Future[int]]:
    """A future that SIGTERM or SIGINT resolves with the signal's number: services stop
    cleanly (systemd and containers send SIGTERM) instead of dying mid-request. Where
    signal handlers cannot be set (not the main thread), it resolves only on cancellation."""
    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[int] = loop.create_future()

    def stop(signum: int) -> None:
        if not stopped.done():
            stopped.set_result(signum)

    handled: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop, sig)
            handled.append(sig)
    try:
        yield stopped
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: not a terminal
        return False


async def cmd_doctor(args: argparse.Namespace, out: TextIO) -> int:
    """Start a receiver on this machine and send a probe through the public URL to it:
    what the API would find there, in milliseconds instead of a silent minute."""
    receiver = _make_receiver(
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        secret=secrets.token_urlsafe(32),  # the probe goes to this receiver alone
    )
    async with receiver:
        report = await receiver.check_reachable(timeout=args.timeout)
    if args.json:
        record = {"reachable": report.reachable, "url": report.url, "seconds": report.seconds}
        out.write(json.dumps({**record, "detail": report.detail}) + "\n")
    else:
        verdict = "reachable" if report.reachable else "NOT reachable"
        out.write(f"callback URL {report.url}: {verdict}: {report.detail}\n")
    return EXIT_OK if report.reachable else EXIT_NETWORK


async def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    await run_demo(Path(args.out), speed=args.speed, out=out)
    return EXIT_OK


# ---------------------------------------------------------------- simulate
async def cmd_simulate(args: argparse.Namespace, out: TextIO) -> int:
    # The simulator's options are shared with ``python -m addvocals_async.testing``; what
    # it leaves unchecked is checked here, as one line and exit 2.
    if not 0 <= args.port <= 65535:
        raise CLIError(f"argument --port: {args.port} is not a port: 0 to 65535", EXIT_USAGE)
    if not math.isfinite(args.speed):
        raise CLIError(f"argument --speed: {args.speed} is not a finite number", EXIT_USAGE)
    if not args.api_key.strip():
        raise CLIError("argument --api-key: the API key is blank", EXIT_USAGE)
    try:
        return await run_simulator(args, out)
    except argparse.ArgumentError as exc:
        raise CLIError(str(exc)) from None
