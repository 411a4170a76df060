"""Configuration (``addvocals_async._config``): the testing switch, as users' suites and
child processes (``ADDVOCALS_TESTING``) turn it on."""

from __future__ import annotations

import math
import subprocess
import sys
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from addvocals_async import PollPolicy, RetryPolicy, Stage, is_testing, set_testing
from addvocals_async._config import DEFAULT_TIME_SCALE, TESTING_ENV, _from_environment, time_scale


def test_the_suite_runs_under_the_switch() -> None:
    assert is_testing()
    assert time_scale() == DEFAULT_TIME_SCALE


def test_retry_waits_are_zero_under_it_and_attempts_are_kept() -> None:
    policy = RetryPolicy()
    with set_testing(True):
        assert [policy.backoff(n) for n in range(1, 6)] == [0.0] * 5
        assert policy.retry_after(30.0) == 0.0
        assert policy.maintenance() == 0.0
        assert policy.attempts == 5
    with set_testing(False):
        assert 1.0 <= policy.backoff(1) <= 2.0
        assert policy.retry_after(30.0) == 30.0
        assert policy.retry_after(600.0) == policy.retry_after_cap
        assert 5.0 <= policy.maintenance() <= 10.0


def test_poll_timings_scale_but_deadlines_do_not() -> None:
    policy = PollPolicy()
    with set_testing(True, time_scale=0.01):
        assert policy.grace_period == pytest.approx(0.15)
        assert policy.poll_floor == pytest.approx(0.01)
        assert policy.due(Stage.COMPLETE.rank) == pytest.approx(1.8)  # 180 s, scaled
        assert policy.interval(1.8, 1.8) == pytest.approx(0.04)  # 4 s at the due time
        assert policy.interval(0.0, 1.8) == pytest.approx(0.3)  # capped at 30 s
        assert (policy.default_timeout, policy.final_poll_timeout) == (1200.0, 10.0)
    with set_testing(False):
        assert (policy.grace_period, policy.poll_floor) == (15.0, 1.0)
        assert policy.interval(180.0, 180.0) == 4.0


def test_the_poll_schedule_follows_the_stage_times() -> None:
    """Dense where the awaited stage is due, sparse away from it; a callback is late a
    quarter of its stage's time after it (or ``grace``, when longer)."""
    policy = PollPolicy()
    with set_testing(False):
        assert [policy.due(rank) for rank in range(5)] == [0.0, 30.0, 100.0, 180.0, 180.0]
        assert [policy.late(rank) for rank in (1, 2, 3)] == [45.0, 125.0, 225.0]
        assert policy.interval(165.0, 180.0) == 4.0  # within 18 s of the due time
        assert policy.interval(142.0, 180.0) == pytest.approx(10.0)  # 20 s further: +6 s
        assert policy.interval(218.0, 180.0) == pytest.approx(14.0)  # as late: +10 s
        assert policy.interval(0.0, 180.0) == 30.0  # at most ``maximum``
        assert policy.interval(175.0, 180.0, jitter=1.1) == pytest.approx(4.4)
        assert PollPolicy(min_interval=5.0).interval(180.0, 180.0) == 5.0  # the floor


@pytest.mark.parametrize(
    "times", [(30.0, 20.0, 180.0), (-1.0, 100.0, 180.0), (30.0, 100.0), (0, 1, math.inf)]
)
def test_stage_times_out_of_order_are_refused(times: Any) -> None:
    with pytest.raises(ValueError, match="stage_times"):
        PollPolicy(stage_times=times)


def test_set_testing_is_a_context_manager_that_restores() -> None:
    with set_testing(False):
        assert not is_testing()
        with set_testing(True, time_scale=0.5):
            assert (is_testing(), time_scale()) == (True, 0.5)
        assert not is_testing()
        assert time_scale() == 1.0
    assert is_testing()


@pytest.mark.parametrize("scale", [0.0, -1.0, 1.5])
def test_a_time_scale_outside_zero_to_one_is_refused(scale: float) -> None:
    with pytest.raises(ValueError, match="time_scale"):
        set_testing(True, time_scale=scale)
    assert time_scale() == DEFAULT_TIME_SCALE  # unchanged


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        ("0", None),
        ("off", None),
        ("No", None),
        ("1", DEFAULT_TIME_SCALE),
        ("true", DEFAULT_TIME_SCALE),
        (" yes ", DEFAULT_TIME_SCALE),
        ("0.001", 0.001),
        ("1.0", 1.0),
        ("2", DEFAULT_TIME_SCALE),  # out of range: on, at the default scale
        ("lots", DEFAULT_TIME_SCALE),  # not a number: on, at the default scale
    ],
)
def test_the_environment_variable_is_parsed(
    value: str, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TESTING_ENV, value)
    assert _from_environment() == expected


def test_the_environment_variable_is_read_at_import() -> None:
    """What a child process of a test (the CLI, an example) relies on."""
    code = (
        "import addvocals_async as a, addvocals_async._config as c\n"
        "print(a.is_testing(), c.time_scale())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={TESTING_ENV: "0.001", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == ["True", "0.001"]


def test_addvocals_log_shows_the_sdks_lines_on_stderr() -> None:
    """ADDVOCALS_LOG=info, as OPENAI_LOG: no logging set-up needed to see what happens."""
    code = (
        "import logging, addvocals_async\n"
        "logging.getLogger('addvocals_async.tasks').info('a line from the SDK')\n"
        "logging.getLogger('addvocals_async.tasks').debug('a debug line')\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code],
        env={"ADDVOCALS_LOG": "info", "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "INFO addvocals_async.tasks: a line from the SDK" in shown.stderr
    assert "a debug line" not in shown.stderr
    silent = subprocess.run(
        [sys.executable, "-c", code], env={"PATH": ""}, capture_output=True, text=True, check=True
    )
    assert silent.stderr == ""


def test_addvocals_provider_picks_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    from addvocals_async import AddVocalsClient

    monkeypatch.setenv("ADDVOCALS_PROVIDER", "kie")
    assert AddVocalsClient("k").profile.name == "kie"
    assert AddVocalsClient("k", provider="sunoapi").profile.name == "sunoapi"
    monkeypatch.delenv("ADDVOCALS_PROVIDER")
    assert AddVocalsClient("k").profile.name == "apibox"


@pytest.mark.parametrize(
    "field",
    ["grace", "initial", "maximum", "min_interval", "default_timeout", "final_poll_timeout"],
)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, "5", None])
def test_poll_timings_that_are_no_finite_seconds_are_refused(field: str, value: Any) -> None:
    """NaN in an interval made the waiting loop poll without ever sleeping (100 % CPU for
    the whole wait); a negative or zero floor with no interval, thousands of requests a
    second against a per-task limit of 3; infinity, a wait no deadline ends."""
    with pytest.raises(ValueError, match=field):
        PollPolicy(**{field: value})


@pytest.mark.parametrize("field", ["min_interval", "final_poll_timeout"])
def test_a_zero_poll_floor_or_last_chance_is_refused(field: str) -> None:
    zero: dict[str, Any] = {field: 0}
    with pytest.raises(ValueError, match=field):
        PollPolicy(**zero)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3"])
def test_unreachable_after_is_a_count(value: Any) -> None:
    with pytest.raises(ValueError, match="unreachable_after"):
        PollPolicy(unreachable_after=value)


def test_numbers_of_any_kind_are_seconds() -> None:
    """``Decimal``, ``Fraction`` (or numpy's scalars) are taken as the numbers they are;
    booleans and text are not numbers of seconds."""
    policy = PollPolicy(
        stage_times=(Fraction(30), Decimal("100"), 180),
        grace=Decimal("2.5"),
        initial=Fraction(1, 2),
    )
    assert policy.stage_times == (30.0, 100.0, 180.0)
    assert (policy.grace, policy.initial) == (2.5, 0.5)
    assert all(type(v) is float for v in policy.stage_times)
    with pytest.raises(ValueError, match="stage_times"):
        PollPolicy(stage_times=(True, True, True))
