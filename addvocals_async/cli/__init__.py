"""The ``addvocals`` command line (also ``python -m addvocals_async``).

Every command prints one clear line on failure (a traceback only with ``--debug``) and
exits with a code that says what went wrong:

    0  done                       4  the task failed
    1  unexpected error           5  a wait timed out
    2  invalid input or usage     6  network trouble (API unreachable, connection lost)
    3  the API refused            7  local files (cannot create or write --out: a
                                     missing or read-only folder, a full disk)
                                  130 interrupted (Ctrl-C)

Output closed early (``addvocals status ... --json | head -1``) ends quietly with 0.

Inside: ``_parser`` builds the options, ``_commands`` runs each subcommand, ``_output``
shows results and turns errors into a line and a code, ``_demo`` is ``addvocals demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TextIO

from ._commands import Command, cmd_serve
from ._output import EXIT_INTERRUPTED, EXIT_OK, describe, exit_code
from ._parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    stream = out or sys.stdout
    args = build_parser().parse_args(argv)
    if args.debug:
        logging.basicConfig(level=logging.DEBUG)
    return _run(args, stream)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    func: Command = args.func
    run: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    if func is cmd_serve:  # a long-running receiver: on uvloop when it is installed
        with contextlib.suppress(ImportError):
            import uvloop

            run = uvloop.run
    try:
        return run(func(args, out))
    except KeyboardInterrupt:
        # On a terminal, end the line the ^C echo left; on a pipe, one plain line.
        sys.stderr.write(("\n" if sys.stderr.isatty() else "") + "interrupted\n")
        following = getattr(args, "following", None)
        if following:  # the task goes on at the API: say how to pick it up again
            sys.stderr.write(f"the task goes on; resume with: addvocals wait {following}\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`addvocals ... | head`): what it wanted, it has. Not a
        # network error; quiet, and nothing more is written to the closed pipe.
        _silence(out)
        return EXIT_OK
    except Exception as exc:
        if args.debug:
            raise
        # One line, whatever a server put in its message: control characters (escape
        # sequences, newlines) are shown escaped, never sent to the terminal.
        text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in describe(exc))
        sys.stderr.write(f"addvocals: error: {text}\n")
        return exit_code(exc)


def _silence(out: TextIO) -> None:
    """Point a closed stdout at /dev/null, so that the interpreter's last flush does not
    print "Exception ignored ... BrokenPipeError" on the way out."""
    if out is not sys.stdout:
        return
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
