"""Configuration (``addvocals_async._config``): the testing switch, as users' suites and
child processes (``ADDVOCALS_TESTING``) turn it on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from addvocals_async import PollPolicy, RetryPolicy, is_testing, set_testing
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
        assert policy.grace_period == pytest.approx(0.6)
        assert policy.poll_floor == pytest.approx(0.01)
        assert 0.08 <= policy.next_interval(None) <= 0.12  # 10 s ± 20 %, scaled
        assert policy.next_interval(10.0) == pytest.approx(0.3, rel=0.21)  # capped at 30 s
        assert (policy.default_timeout, policy.final_poll_timeout) == (1200.0, 10.0)
    with set_testing(False):
        assert (policy.grace_period, policy.poll_floor) == (60.0, 1.0)
        assert 8.0 <= policy.next_interval(None) <= 12.0


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
