"""Configuration in one place: environment variable names, retry and poll policies, and
the process-wide testing switch.

The testing switch (``set_testing(True)``, or ``ADDVOCALS_TESTING=1`` in the environment
of a child process) is for users' test suites and ours, in the spirit of
``stamina.set_testing``: retries keep their attempts but drop every wait, and poll
timings shrink by ``time_scale`` (0.01 by default: the 180 s a task usually takes become
1.8 s), so no test sleeps through a real poll interval or backoff.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from types import TracebackType
from typing import Any

import attr  # attrs under its first name: aiohttp imports it, the `attrs` alias costs ~0.5 ms

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "LOG_ENV",
    "PROVIDER_ENV",
    "SECRET_ENV",
    "TESTING_ENV",
    "WEBHOOK_KEY_ENV",
    "PollPolicy",
    "RetryPolicy",
    "configure_logging_from_environment",
    "is_testing",
    "set_testing",
    "time_scale",
]

API_KEY_ENV = "ADDVOCALS_API_KEY"
"""The API key, when ``AddVocalsClient(api_key=...)`` is not given."""
BASE_URL_ENV = "ADDVOCALS_BASE_URL"
"""Overrides the provider's host (handy to point a program at the simulator)."""
SECRET_ENV = "ADDVOCALS_RECEIVER_SECRET"
"""The receiver's secret, which keys the callback URL tokens."""
WEBHOOK_KEY_ENV = "ADDVOCALS_WEBHOOK_HMAC_KEY"
"""kie's ``webhookHmacKey``: turns on the callback signature check."""
LOG_ENV = "ADDVOCALS_LOG"
"""``debug`` or ``info`` (or ``warning``): show the SDK's log lines on stderr, as
``OPENAI_LOG`` does, without configuring logging yourself."""
PROVIDER_ENV = "ADDVOCALS_PROVIDER"
"""The provider (``apibox``, ``sunoapi``, ``kie``) when ``provider=`` is not given."""
TESTING_ENV = "ADDVOCALS_TESTING"
"""``1`` (or a time scale such as ``0.001``) turns the testing switch on at import."""

DEFAULT_TIME_SCALE = 0.01


def _from_environment() -> float | None:
    value = os.environ.get(TESTING_ENV, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return None
    if value in ("1", "true", "yes", "on"):
        return DEFAULT_TIME_SCALE
    try:
        scale = float(value)
    except ValueError:
        return DEFAULT_TIME_SCALE
    return scale if 0 < scale <= 1 else DEFAULT_TIME_SCALE


_testing_scale: float | None = _from_environment()


class _TestingContext:
    """What ``set_testing`` returns: usable as a context manager that restores the
    previous setting on exit."""

    __slots__ = ("_previous",)

    def __init__(self, previous: float | None) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _testing_scale
        _testing_scale = self._previous


def set_testing(
    testing: bool = True, *, time_scale: float = DEFAULT_TIME_SCALE
) -> contextlib.AbstractContextManager[None]:
    """Turn the testing switch on or off for the whole process.

    On: retries keep their attempts but never wait, and poll timings are multiplied by
    ``time_scale``. Works as a plain call or as ``with set_testing(True): ...``.
    """
    global _testing_scale
    if not 0 < time_scale <= 1:
        raise ValueError(f"time_scale must be in (0, 1], got {time_scale!r}")
    previous = _testing_scale
    _testing_scale = time_scale if testing else None
    return _TestingContext(previous)


def is_testing() -> bool:
    """True while the testing switch is on."""
    return _testing_scale is not None


def time_scale() -> float:
    """The factor applied to poll timings: 1.0 normally, smaller under the testing switch."""
    return 1.0 if _testing_scale is None else _testing_scale


@attr.frozen(kw_only=True)
class RetryPolicy:
    """Backoff for retried requests: exponential with full jitter, ``Retry-After``
    honoured (up to ``retry_after_cap``), a longer ``maintenance_wait`` for code 455.
    ``timeout`` bounds all attempts of one call together. ``RetryPolicy.no_wait()``
    keeps the attempts but drops every wait, as the testing switch does."""

    attempts: int = 5
    wait_initial: float = 1.0
    wait_max: float = 30.0
    wait_jitter: float = 1.0
    maintenance_wait: float = 10.0
    retry_after_cap: float = 60.0
    timeout: float | None = 180.0

    @classmethod
    def no_wait(cls, attempts: int = 5) -> RetryPolicy:
        return cls(
            attempts=attempts,
            wait_initial=0.0,
            wait_max=0.0,
            wait_jitter=0.0,
            maintenance_wait=0.0,
            retry_after_cap=0.0,
        )

    def backoff(self, attempt: int) -> float:
        """The wait before retry number ``attempt`` (1 for the first retry)."""
        if is_testing():
            return 0.0
        exponential = min(self.wait_max, self.wait_initial * 2.0 ** (attempt - 1))
        return min(self.wait_max, exponential + random.uniform(0, self.wait_jitter))

    def retry_after(self, seconds: float) -> float:
        """The wait for a ``Retry-After`` the server gave."""
        return 0.0 if is_testing() else min(seconds, self.retry_after_cap)

    def maintenance(self) -> float:
        """The wait after a maintenance answer (code 455)."""
        return 0.0 if is_testing() else self.maintenance_wait * random.uniform(0.5, 1.0)


#: Polls come every ``initial`` seconds while the awaited stage is within a tenth of its
#: usual time of being due (180 s ± 18 s for ``complete``); further off, the interval
#: widens by 0.3 s per second before that (10 s twenty seconds further) and 0.5 s per
#: second after it (a task that late is more likely stuck than about to finish). Tuned
#: on the benchmark ``poll_timing``: tasks spread from 20 % faster to 20 % slower than
#: usual are noticed 2-3 s after they finish (median; 20 % slower alone: about 10 s), in
#: at most 25 requests even 4 minutes in.
_ZONE = 0.1
_WIDENING_EARLY = 0.3
_WIDENING_LATE = 0.5
#: A stage is late once a quarter of its usual time has passed after it (or ``grace``,
#: whichever is longer).
_LATE_FRACTION = 0.25


def _as_number(value: Any) -> Any:
    """A number of any kind (``numpy.float64``, ``Decimal``…) as a float; anything else,
    text and booleans included, as it came, for the validator to refuse."""
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        return value
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return value


def _as_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_as_number(v) for v in value)
    return value


def _is_seconds(value: object) -> bool:
    return isinstance(value, float) and 0 <= value < float("inf")


def _seconds(*, positive: bool) -> Any:
    """A validator: a finite number of seconds, ``>= 0`` (``> 0`` when ``positive``).
    NaN, infinities, negatives and text are refused at construction: in a deadline or
    an interval they meant a wait that never ends, or a poll loop that never sleeps."""

    def check(_: object, attribute: Any, value: object) -> None:
        if not _is_seconds(value) or (positive and not value):
            bound = "> 0" if positive else ">= 0"
            raise ValueError(
                f"{attribute.name} must be a finite number of seconds {bound}, got {value!r}"
            )

    return check


def _check_count(_: object, attribute: Any, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a whole number >= 1, got {value!r}")


def _check_stage_times(_: object, __: object, value: tuple[float, float, float]) -> None:
    if (
        not isinstance(value, tuple)
        or len(value) != 3
        or not all(_is_seconds(v) for v in value)
        or not value[0] <= value[1] <= value[2]
    ):
        raise ValueError(
            "stage_times must be three numbers of seconds (text, first, complete) with "
            f"0 <= text <= first <= complete, got {value!r}"
        )


@attr.frozen(kw_only=True)
class PollPolicy:
    """When tasks fall back to the details endpoint, following the API's own timing.

    - ``stage_times``: when the API usually reaches the text, first and complete stages,
      in seconds after the submit (about 30, 100 and 180 s; real tasks take 2-4 minutes).
      Polls cluster around the time the awaited stage is due and thin out away from it.
    - ``grace``: with a receiver, how late a stage's callback may be, past its usual time,
      before one poll checks (at least a quarter of that usual time). On time, callbacks
      alone finish the task: no poll at all.
    - ``initial`` / ``maximum``: the polling interval: ``initial`` while the awaited
      stage is within a tenth of its usual time of being due, widening by 0.3 s per
      second further before that and 0.5 s per second after it, up to ``maximum``; ±10 %
      jitter. The API's docs advise 10-30 s: that is the interval away from the due times.
    - ``min_interval``: never poll one task more often than this (kie allows 3/s/task).
    - ``default_timeout``: the deadline of a wait given no ``timeout`` (nothing waits forever).
    - ``final_poll_timeout``: the time the last-chance poll at a deadline may take.
    - ``unreachable_after``: after this many polls in a row that could not reach the API
      (connection refused, DNS, time-out), log one WARNING per task saying so.
    - ``give_up_unreachable``: also end the wait then, raising the last
      ``APIConnectionError``. Off by default: a library wait rides out an outage (a
      transient poll error never fails a wait) and only says so; the ``addvocals`` command
      line turns it on, as a person at a prompt is better told at once.

    Under the testing switch the timings (the first five) are multiplied by its time scale.
    """

    stage_times: tuple[float, float, float] = attr.field(
        default=(30.0, 100.0, 180.0),
        converter=_as_tuple,
        validator=_check_stage_times,
    )
    grace: float = attr.field(
        default=15.0, converter=_as_number, validator=_seconds(positive=False)
    )
    initial: float = attr.field(
        default=4.0, converter=_as_number, validator=_seconds(positive=False)
    )
    maximum: float = attr.field(
        default=30.0, converter=_as_number, validator=_seconds(positive=False)
    )
    min_interval: float = attr.field(
        default=1.0, converter=_as_number, validator=_seconds(positive=True)
    )
    default_timeout: float = attr.field(
        default=1200.0, converter=_as_number, validator=_seconds(positive=False)
    )
    final_poll_timeout: float = attr.field(
        default=10.0, converter=_as_number, validator=_seconds(positive=True)
    )
    unreachable_after: int = attr.field(default=3, validator=_check_count)
    give_up_unreachable: bool = False

    @classmethod
    def fast(cls) -> PollPolicy:
        """Intervals for tests against the simulator: poll within tenths of a second."""
        return cls(
            stage_times=(0.0, 0.0, 0.0),
            grace=0.5,
            initial=0.1,
            maximum=0.3,
            min_interval=0.05,
            default_timeout=30.0,
        )

    @property
    def grace_period(self) -> float:
        return self.grace * time_scale()

    @property
    def poll_floor(self) -> float:
        """``min_interval`` as in force now (scaled under the testing switch)."""
        return self.min_interval * time_scale()

    def due(self, rank: int) -> float:
        """When the stage of ``rank`` (``Stage.rank``: 1 text, 2 first, 3 complete; 0, the
        submit, is due at once; 4, failed, like complete) is usually reached, in seconds
        after the submit, scaled."""
        if rank <= 0:
            return 0.0
        return self.stage_times[min(rank, 3) - 1] * time_scale()

    def late(self, rank: int) -> float:
        """When the callback of the stage of ``rank`` is late enough for a poll to check,
        in seconds after the submit, scaled."""
        due = self.due(rank)
        return due + max(self.grace_period, due * _LATE_FRACTION)

    def interval(self, age: float, due: float, jitter: float = 1.0) -> float:
        """The wait from a poll (or the submit) made when the task was ``age`` seconds old
        to the next one, while the awaited stage is ``due`` seconds after the submit (both
        scaled); ``jitter`` multiplies it (0.9 to 1.1), ``min_interval`` bounds it."""
        scale = time_scale()
        off = max(0.0, abs(age - due) - _ZONE * due)
        widening = _WIDENING_EARLY if age < due else _WIDENING_LATE
        base = min(self.maximum * scale, self.initial * scale + widening * off)
        return max(base * jitter, self.poll_floor)


def configure_logging_from_environment() -> None:
    """Honour ``ADDVOCALS_LOG``: a stderr handler on the ``addvocals_async`` logger at the
    level named. Nothing happens when it is unset, or when that logger already has a
    handler (the application configured logging itself)."""
    level = os.environ.get(LOG_ENV, "").strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        return
    logger = logging.getLogger("addvocals_async")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
