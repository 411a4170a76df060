"""Which scenario each submit follows, and the clock that plays a task's lifecycle.

A submit takes the head of the ``script()`` queue, else a seeded ``mix`` draw, else the
default scenario. A created task then gets its timeline from ``_scenarios.plan`` and this
module plays it on the scaled clock: record-info's status moves, the files of each stage
are published, and the callbacks go to the sender.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
import yarl

from ._records import SimTask, SimTrack
from ._scenarios import (
    CREATED_FAULTS,
    FAILED_STATUSES,
    Step,
    check_options,
    failed_status_for,
    plan,
)
from ._sender import CallbackSender
from ._state import Background, SimState
from ._wire import engine_name

__all__ = ["Choice", "Lifecycle"]

_STAGE_OF_STATUS: Mapping[str, str] = {
    "PENDING": "pending",
    "TEXT_SUCCESS": "text",
    "FIRST_SUCCESS": "first",
    "SUCCESS": "complete",
    "CALLBACK_EXCEPTION": "complete",
    **dict.fromkeys(FAILED_STATUSES, "failed"),
}


@attrs.define
class _ScriptEntry:
    """A queued ``script()`` call: ``remaining`` tasks (or rejection rounds) still to go."""

    name: str
    options: dict[str, Any]
    remaining: int
    times_left: int


@attrs.frozen
class Choice:
    """The scenario picked for one submit, and the queue entry it came from (if any)."""

    name: str
    options: Mapping[str, Any]
    entry: _ScriptEntry | None


class Lifecycle:
    """Chooses scenarios, creates tasks and runs each one's timeline on the scaled clock."""

    def __init__(
        self,
        state: SimState,
        background: Background,
        sender: CallbackSender,
        *,
        seed: int | None,
        scenario: str,
        mix: Mapping[str, float],
    ) -> None:
        self._state = state
        self._background = background
        self._sender = sender
        self._rng = random.Random(seed)
        check_options(scenario, {})
        self._default_scenario = scenario
        self._mix: dict[str, float] = {}
        self.mix = mix
        self._script: collections.deque[_ScriptEntry] = collections.deque()

    # ----------------------------------------------------------------- scenario choice

    @property
    def default_scenario(self) -> str:
        return self._default_scenario

    @default_scenario.setter
    def default_scenario(self, name: str) -> None:
        check_options(name, {})
        self._default_scenario = name

    @property
    def mix(self) -> Mapping[str, float]:
        return dict(self._mix)

    @mix.setter
    def mix(self, weights: Mapping[str, float]) -> None:
        for name, weight in weights.items():
            check_options(name, {})
            if weight < 0:
                raise ValueError(f"the weight of {name!r} must not be negative")
        self._mix = dict(weights)

    def script(self, scenario: str, count: int, options: dict[str, Any]) -> None:
        """Queue ``scenario`` for the next ``count`` submits (see ``Simulator.script``)."""
        check_options(scenario, options)
        if count < 1:
            raise ValueError("count must be at least 1")
        times = int(options.get("times", 1))
        self._script.append(_ScriptEntry(scenario, dict(options), count, times))

    def choose(self) -> Choice:
        """The scenario for this submit: the head of the script, else a mix draw, else the
        default. Nothing is consumed until the submit's outcome is known."""
        if self._script:
            head = self._script[0]
            return Choice(head.name, head.options, head)
        if self._mix:
            total = sum(self._mix.values())
            scale = total if total > 1 else 1.0
            draw = self._rng.random()
            cumulative = 0.0
            for name, weight in self._mix.items():
                cumulative += weight / scale
                if draw < cumulative:
                    return Choice(name, {}, None)
        return Choice(self._default_scenario, {}, None)

    def consume(self, choice: Choice, *, rejected: bool) -> None:
        """Count one use of ``choice``'s script entry: a created task, or one rejected
        submit of the ``times`` a rejecting scenario spends its turn on."""
        entry = choice.entry
        if entry is None:
            return
        if rejected:
            entry.times_left -= 1
            if entry.times_left > 0:
                return
            entry.times_left = int(entry.options.get("times", 1))
        entry.remaining -= 1
        if entry.remaining <= 0 and self._script and self._script[0] is entry:
            self._script.popleft()

    # -------------------------------------------------------------------- the clock

    def create_task(self, body: dict[str, Any], choice: Choice) -> SimTask:
        """Make the task record and its two tracks, and register it for record-info."""
        state = self._state
        profile = state.profile
        assert state.base_url is not None
        task_id = f"{self._rng.getrandbits(128):032x}"
        model = body.get("model") or profile.default_model
        created = datetime.now(timezone.utc)
        created = created.replace(microsecond=created.microsecond // 1000 * 1000)
        lyrics = body.get("lyrics") or body.get("prompt") or "Oh, la la la"
        gender = {"m": "male vocals", "f": "female vocals"}.get(body.get("vocalGender") or "")
        tags = ", ".join(filter(None, (str(body["style"]).lower(), gender)))
        base = yarl.URL(state.base_url)
        tracks = []
        for index in range(2):
            track_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            files = base / "files" / task_id
            upstream = base / "upstream"
            tracks.append(
                SimTrack(
                    id=track_id,
                    index=index,
                    title=body["title"],
                    prompt=f"[Verse] {lyrics}"[:3000],
                    tags=tags,
                    model_name=engine_name(str(model)),
                    duration=round(self._rng.uniform(120.0, 240.0), 2),
                    create_time=created,
                    audio_url=str(files / f"{track_id}.mp3"),
                    stream_audio_url=str(files / f"{track_id}-stream.mp3"),
                    image_url=str(files / f"{track_id}.jpeg"),
                    source_audio_url=str(upstream / f"{track_id}.mp3"),
                    source_stream_audio_url=str(upstream / "stream" / track_id),
                    source_image_url=str(upstream / f"image_{track_id}.jpeg"),
                    frames=8 + 6 * index + self._rng.randrange(6),
                    gray=self._rng.randrange(40, 216),
                )
            )
        task = SimTask(
            task_id=task_id,
            scenario=choice.name,
            callback_url=body["callBackUrl"],
            request=body,
            tracks=tracks,
            created_at=time.monotonic(),
            options=dict(choice.options),
        )
        if choice.name in ("error", "fail_after_first", "failed_status_only"):
            code = int(choice.options.get("error_code", min(profile.callback_codes)))
            task.error_code = code
            task.error_message = choice.options.get("error_message") or self._failure_text(code)
        elif choice.name == "upload_unreachable":
            task.error_code = 451
            task.error_message = choice.options.get("error_message") or self._failure_text(451)
        state.tasks[task_id] = task
        return task

    async def start(self, task: SimTask) -> None:
        """Run ``task``'s early steps now, before the submit answers, and the rest on the
        clock in the background."""
        steps = self._plan(task)
        started = time.monotonic()
        for step in steps:
            if step.early:
                await self._apply(task, step)
        self._background.spawn(
            self._run(task, [s for s in steps if not s.early], started),
            name=f"addvocals-sim-lifecycle-{task.task_id}",
        )

    def _failure_text(self, code: int) -> str:
        text = self._state.profile.describe_callback_code(code) or "task failed"
        return text[0].upper() + text[1:]

    def _plan(self, task: SimTask) -> list[Step]:
        failed = "GENERATE_AUDIO_FAILED"
        if task.error_code is not None:
            failed = str(task.options.get("status") or failed_status_for(task.error_code))
        name = task.scenario
        return plan(
            "normal" if name in CREATED_FAULTS else name,
            task.options,
            times=self._state.stage_times,
            failed_status=failed,
            upload_error=name == "upload_unreachable",
        )

    async def _run(self, task: SimTask, steps: list[Step], started: float) -> None:
        """Play ``steps`` on the scaled clock. First attempts are sent in order, one after
        the other, so the receiver sees the scripted order; retries run on their own."""
        for step in steps:
            delay = started + self._state.scaled(step.at) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._apply(task, step)
        task.finished = True

    async def _apply(self, task: SimTask, step: Step) -> None:
        if step.status is not None:
            self._set_status(task, step.status)
        if step.callback is not None:
            await self._sender.deliver(task, step.callback)

    def _set_status(self, task: SimTask, status: str) -> None:
        """Move record-info to ``status``; publish the files the new stage hands out."""
        task.status = status
        stage = _STAGE_OF_STATUS.get(status)
        if stage is None:
            return  # an undocumented status: the data shown stays as it was
        task.stage = stage
        now = time.monotonic()
        if stage in ("first", "complete"):
            for track in task.tracks:
                if track.media_published_at is None:
                    track.media_published_at = now
                if track.audio_published_at is None and (stage == "complete" or track.index == 0):
                    track.audio_published_at = now
        state = self._state
        if stage == "failed" and state.profile.name == "kie" and task.error_code == 531:
            state.credits += state.task_cost  # "generation failed, credits refunded"
