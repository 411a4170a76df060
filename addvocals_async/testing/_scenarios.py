"""The scenarios a simulated task can follow, as pure data: names, options and timelines.

A scenario is either a lifecycle (which callbacks are sent when, and what record-info says
meanwhile) or a submit fault (how the submit endpoint answers). Keeping the timelines here,
free of I/O, means each one can be read at a glance and checked without a server.

Times are the real API's seconds after the submit; the simulator divides them by its speed.

Lifecycles (the callbacks sent, in order; record-info advances on the normal clock):

- ``normal``: text → first → complete. ``complete_only``: complete alone.
  ``skip_text``: first → complete. ``duplicates`` (``copies=2``): each stage sent
  ``copies`` times. ``out_of_order``: complete, then a late first, then text.
- ``early_callback``: text is delivered and answered before the submit's own answer leaves;
  with ``all_early=True`` all three stages are.
- ``lost_all``: no callbacks, record-info still reaches SUCCESS. ``lost_complete``: text and
  first only. ``callback_exception``: no callbacks, record-info ends ``CALLBACK_EXCEPTION``
  with finished tracks.
- ``error`` (``error_code``, ``error_message``, ``status``): one error callback; record-info
  shows the matching failed status with ``errorCode``/``errorMessage``. The default code is
  the provider's first documented callback failure code. ``fail_after_first``: text, first,
  then the error. ``failed_status_only``: no callbacks, record-info ends failed.
- ``unknown_type`` (``callback_type="progress"``, ``unknown_status="MIXING_VOCALS"``): a
  normal run plus a callback of an unknown type with unknown fields, while record-info
  briefly shows an undocumented status.
- ``bad_signature`` / ``stale_signature``: a normal run whose signature headers are wrong,
  or ten minutes old (signed with the account key, or a random one when none is set).

Submit faults:

- ``rate_limited`` (``times=1``, ``code``): the provider's rate-limit code, nothing created.
  ``maintenance`` (``times=1``): 455, nothing created.
- ``server_error_after_create``: the task is created and runs normally, but the answer is
  envelope code 500. ``http_502_after_create``: an HTML 502 page. ``hang_after_create``
  (``seconds``): the answer is held back. ``drop_after_create``: the connection is closed.
- ``upload_unreachable``: kie answers 451 and creates nothing; apibox and sunoapi create the
  task, then send an error callback with 451.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "CREATED_FAULTS",
    "FAILED_STATUSES",
    "SCENARIOS",
    "StageTimes",
    "Step",
    "check_options",
    "failed_status_for",
    "plan",
]

SCENARIOS: tuple[str, ...] = (
    # lifecycles
    "normal",
    "complete_only",
    "skip_text",
    "duplicates",
    "out_of_order",
    "early_callback",
    "lost_all",
    "lost_complete",
    "callback_exception",
    "error",
    "fail_after_first",
    "failed_status_only",
    "unknown_type",
    "bad_signature",
    "stale_signature",
    # submit faults
    "rate_limited",
    "maintenance",
    "server_error_after_create",
    "http_502_after_create",
    "hang_after_create",
    "drop_after_create",
    "upload_unreachable",
)
"""Every scenario name ``Simulator.script`` and ``scenario=`` accept."""

CREATED_FAULTS = frozenset(
    {"server_error_after_create", "http_502_after_create", "hang_after_create", "drop_after_create"}
)
"""Submit faults where the task exists and runs normally, but the answer is lost or wrong."""

FAILED_STATUSES = frozenset({"CREATE_TASK_FAILED", "GENERATE_AUDIO_FAILED", "SENSITIVE_WORD_ERROR"})

_ERROR_OPTIONS: Mapping[str, type | tuple[type, ...]] = {
    "error_code": int,
    "error_message": str,
    "status": str,
}

_OPTIONS: Mapping[str, Mapping[str, type | tuple[type, ...]]] = {
    "duplicates": {"copies": int},
    "early_callback": {"all_early": bool},
    "error": _ERROR_OPTIONS,
    "fail_after_first": _ERROR_OPTIONS,
    "failed_status_only": _ERROR_OPTIONS,
    "unknown_type": {"callback_type": str, "unknown_status": (str, type(None))},
    "rate_limited": {"times": int, "code": int},
    "maintenance": {"times": int},
    "hang_after_create": {"seconds": (int, float)},
    "upload_unreachable": {"error_message": str},
}


def check_options(name: str, options: Mapping[str, Any]) -> None:
    """Reject an unknown scenario, or an option it does not take: a typo in a test's
    script should fail loudly, not silently run the default."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; expected one of: {', '.join(SCENARIOS)}")
    allowed = _OPTIONS.get(name, {})
    for key, value in options.items():
        if key not in allowed:
            takes = ", ".join(sorted(allowed)) or "no options"
            raise TypeError(f"scenario {name!r} takes {takes}; got {key!r}")
        expected = allowed[key]
        if isinstance(value, bool) and expected is not bool:
            raise TypeError(f"option {key!r} of {name!r} must not be a bool")
        if not isinstance(value, expected):
            raise TypeError(f"option {key!r} of {name!r} has the wrong type: {value!r}")
    for key in ("copies", "times"):
        if key in options and options[key] < 1:
            raise ValueError(f"option {key!r} of {name!r} must be at least 1")


def failed_status_for(code: int) -> str:
    """The record-info failure status that goes with a callback failure code.

    The docs pair no code with a status; this reading follows the code tables: content and
    copyright rejections (400, kie's 413 "matches an existing work") are filtered words,
    an input that could not be fetched (451) means the task never really started, and
    everything else failed while generating.
    """
    if code in (400, 413):
        return "SENSITIVE_WORD_ERROR"
    if code == 451:
        return "CREATE_TASK_FAILED"
    return "GENERATE_AUDIO_FAILED"


@attrs.frozen
class StageTimes:
    """When the real API reaches each stage, in seconds after the submit (about 30 s for
    the text, 100 s for the first track, 180 s for both)."""

    text: float = 30.0
    first: float = 100.0
    complete: float = 180.0

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.text <= self.first <= self.complete:
            raise ValueError("stage times must satisfy 0 <= text <= first <= complete")

    @property
    def error(self) -> float:
        """When a task that fails early does so: between the text and the first track."""
        return (self.text + self.first) / 2


@attrs.frozen
class Step:
    """At ``at`` seconds after the submit, record-info turns to ``status`` (when given),
    then the ``callback`` type (when given) is sent. ``early`` steps run inside the submit
    handler, before its answer leaves."""

    at: float
    status: str | None = None
    callback: str | None = None
    early: bool = False


def plan(
    name: str,
    options: Mapping[str, Any],
    *,
    times: StageTimes,
    failed_status: str,
    upload_error: bool = False,
) -> list[Step]:
    """The timeline of a created task following scenario ``name``.

    ``failed_status`` is the status a failing scenario ends in; ``upload_error`` turns the
    task into one whose input could not be fetched (``upload_unreachable`` on apibox and
    sunoapi, where the failure comes as a callback after the task was created).
    """
    t, f, c = times.text, times.first, times.complete
    normal = [
        Step(t, "TEXT_SUCCESS", "text"),
        Step(f, "FIRST_SUCCESS", "first"),
        Step(c, "SUCCESS", "complete"),
    ]
    if upload_error:
        return [Step(min(10.0, t), failed_status, "error")]
    if name == "complete_only":
        return [Step(c, "SUCCESS", "complete")]
    if name == "skip_text":
        return normal[1:]
    if name == "duplicates":
        copies = int(options.get("copies", 2))
        steps: list[Step] = []
        for step in normal:
            steps.append(step)
            steps.extend(Step(step.at + 2.0 * n, None, step.callback) for n in range(1, copies))
        return steps
    if name == "out_of_order":
        return [
            Step(t, "TEXT_SUCCESS"),
            Step(f, "FIRST_SUCCESS"),
            Step(c, "SUCCESS", "complete"),
            Step(c + 5.0, None, "first"),
            Step(c + 10.0, None, "text"),
        ]
    if name == "early_callback":
        if options.get("all_early", False):
            return [attrs.evolve(step, at=0.0, early=True) for step in normal]
        return [Step(0.0, "TEXT_SUCCESS", "text", early=True), *normal[1:]]
    if name == "lost_all":
        return [attrs.evolve(step, callback=None) for step in normal]
    if name == "lost_complete":
        return [*normal[:2], Step(c, "SUCCESS")]
    if name == "callback_exception":
        return [Step(t, "TEXT_SUCCESS"), Step(f, "FIRST_SUCCESS"), Step(c, "CALLBACK_EXCEPTION")]
    if name == "error":
        return [Step(times.error, failed_status, "error")]
    if name == "fail_after_first":
        return [*normal[:2], Step(c, failed_status, "error")]
    if name == "failed_status_only":
        return [Step(t, "TEXT_SUCCESS"), Step(times.error, failed_status)]
    if name == "unknown_type":
        unknown_status = options.get("unknown_status", "MIXING_VOCALS")
        extra = Step(times.error, unknown_status, str(options.get("callback_type", "progress")))
        return [normal[0], extra, *normal[1:]]
    # normal, bad_signature, stale_signature and the submit faults that still create a task
    return normal
