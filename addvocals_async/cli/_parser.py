"""The ``addvocals`` argument parser: every subcommand, its options and its ``func``."""

from __future__ import annotations

import argparse
import math

from .. import PROVIDERS, __version__
from .._config import API_KEY_ENV, PROVIDER_ENV, SECRET_ENV
from ..testing._command import configure_parser
from ._commands import (
    cmd_credits,
    cmd_demo,
    cmd_doctor,
    cmd_download,
    cmd_serve,
    cmd_simulate,
    cmd_status,
    cmd_submit,
    cmd_upload,
    cmd_wait,
)

__all__ = ["add_simulate_command", "build_parser"]


# ---------------------------------------------------------------- option types
# Each numeric option is checked where it is parsed: a value that would silently switch a
# safety off (a NaN or negative deadline, an infinite one, a port bind() cannot take) is a
# usage error, exit 2, with argparse's usage and one line naming the option.


def _number(text: str) -> float:
    """A finite number: ``nan``, ``inf`` and ``1e400`` are no number of seconds or weight."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _weight(text: str) -> float:
    return _number(text)  # the range and the 0.01 grid: the request's own validation


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (a deadline: 0, negative or NaN would mean none)."""
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _speed(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive speed")
    return value


def _port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port: 0 to 65535")
    return value


def _api_key(text: str) -> str:
    """A key with something in it; the value itself is never echoed."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the API key is blank")
    return text


def _add_api_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("API")
    group.add_argument(
        "--api-key", type=_api_key, help=f"API key (default: ${API_KEY_ENV}); never printed"
    )
    group.add_argument(
        "--provider",
        choices=sorted(PROVIDERS),
        default=None,
        help=f"which reseller of the API (default: ${PROVIDER_ENV}, else apibox)",
    )
    group.add_argument("--base-url", help="override the provider's base URL (e.g. a simulator)")
    group.add_argument(
        "--request-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="timeout of each HTTP request (default: 30)",
    )


def _poll_interval(text: str) -> float:
    value = _number(text)
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
        help=(
            "poll the task this often (default: every 4 s around when each stage is "
            "usually reached, up to 30 s away from it; at least 0.5)"
        ),
    )
    group.add_argument(
        "--receiver-port",
        type=_port,
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
    _add_redis_options(group)


def _add_redis_options(group: argparse._ActionsContainer) -> None:
    group.add_argument(
        "--redis",
        metavar="URL",
        help="the Redis shared by the receiver tier (serve --redis) and the workers "
        "(submit/wait --redis with the tier's --public-url); its password is never printed",
    )
    group.add_argument(
        "--redis-prefix",
        metavar="PREFIX",
        help="the Redis key prefix shared with the tier (default: addvocals:)",
    )


def _add_follow_options(parser: argparse.ArgumentParser, *, timeout_help: str) -> None:
    """What following a task takes (submit --wait, wait): a deadline, the output form,
    the API and, optionally, a receiver."""
    parser.add_argument(
        "--timeout",
        type=_seconds,
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
        epilog="Try it without an account: addvocals demo. Exit codes: 0 ok, 1 unexpected, "
        "2 invalid input, 3 API error, 4 task failed, 5 timeout, 6 network, "
        "7 local files (cannot write --out, --file missing or not audio), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"addvocals {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "submit",
        help="submit an instrumental for vocals",
        description="Submit an instrumental; prints the task id first.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--upload-url", help="public URL of the instrumental (MP3, WAV, FLAC, OGG, M4A)"
    )
    source.add_argument(
        "--file",
        metavar="PATH",
        help="a local instrumental (MP3, WAV, FLAC, OGG, M4A, up to 100 MiB): uploaded to the "
        "provider (sunoapi, kie), or served from the receiver (apibox; needs --wait and "
        "--receiver-port/--public-url)",
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--upload", action="store_true", help="with --file: use the provider's upload API"
    )
    how.add_argument(
        "--serve-file",
        action="store_true",
        help="with --file: serve it from the receiver until the API has fetched it",
    )
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
    replace = p.add_mutually_exclusive_group()
    replace.add_argument("--overwrite", action="store_true", help="replace existing files")
    replace.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep files already there and download the rest (finish an interrupted run)",
    )
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
    p.add_argument("--port", type=_port, default=8080, help="bind port (default: 8080)")
    p.add_argument("--public-url", help="the public base URL the API reaches")
    p.add_argument(
        "--receiver-secret",
        dest="receiver_secret",
        help=f"secret of the callback URL tokens, as given to submit (default: ${SECRET_ENV})",
    )
    # The old spelling, kept working but no longer shown.
    p.add_argument("--secret", dest="receiver_secret", help=argparse.SUPPRESS)
    _add_redis_options(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "doctor",
        help="check that the API can reach a receiver here through its public URL",
        description="Start a receiver on this machine and send a probe through its public "
        "URL to it: whether it arrives, and how fast, or what answered instead. Exits 0 "
        "when it arrives, 6 when it does not.",
    )
    p.add_argument("--public-url", help="the public base URL the API would reach")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8080, help="bind port (default: 8080)")
    p.add_argument(
        "--timeout", type=_seconds, default=10.0, help="seconds to wait for it (default: 10)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser(
        "upload",
        help="upload an instrumental to the provider's file host and print its URL",
        description="Upload a local file (or have the host fetch a URL) with the provider's "
        "upload API (sunoapi, kie; free) and print the URL to pass as --upload-url. It "
        "expires: 3 days on sunoapi, 24 hours on kie.",
    )
    p.add_argument("path", metavar="PATH_OR_URL", help="a local audio file, or an http(s) URL")
    p.add_argument("--name", help="the file name on the host (default: the file's own)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_api_options(p)
    p.set_defaults(func=cmd_upload)

    add_simulate_command(sub)

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
        "--speed", type=_speed, default=40.0, help="time compression of the simulator (default: 40)"
    )
    p.set_defaults(func=cmd_demo)
    for command in sub.choices.values():
        # Where people type it too (``addvocals wait ID --debug``); absent, the value
        # given before the command stands.
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


# ---------------------------------------------------------------- simulate
def add_simulate_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """The ``simulate`` subcommand: the one simulator command line, shared with
    ``python -m addvocals_async.testing``."""
    p = subparsers.add_parser(
        "simulate",
        help="run the API simulator for testing",
        description="Serve a simulator of the Add Vocals API on this machine.",
    )
    configure_parser(p)
    p.set_defaults(func=cmd_simulate)
