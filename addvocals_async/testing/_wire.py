"""The simulator's side of the wire: request checks and the JSON it sends, built from the spec.

This module deliberately shares nothing with the SDK's converter. If both sides were built
from one table of names, a wrong name would round-trip perfectly and every test would pass;
writing the simulator's JSON out by hand, field by field as the documented callbacks and
record-info answers show it, is what lets the simulator catch a parser that reads the wrong
key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import attrs
import yarl

from .._providers import ProviderProfile
from ._records import SimTask, SimTrack

__all__ = [
    "CreateTimeMode",
    "Dialect",
    "Rejection",
    "callback_body",
    "details_data",
    "dialect_for",
    "engine_name",
    "envelope",
    "oracle_signature",
    "validate_submit",
]

CreateTimeMode = Literal["string", "epoch_ms", "alternate"]


@attrs.frozen
class Dialect:
    """The codes and wording that differ between the apibox/sunoapi family and kie."""

    invalid: int
    too_long: int
    rate_limited: int
    no_credits: int
    unauthorized_msg: str
    sync_upload_error: bool
    prompt_required: bool
    repeats_error_in_response: bool


_APIBOX_DIALECT = Dialect(
    invalid=400,
    too_long=413,
    rate_limited=430,
    no_credits=429,
    unauthorized_msg="Unauthorized: the API key is missing or invalid",
    sync_upload_error=False,
    prompt_required=True,
    repeats_error_in_response=False,
)

_KIE_DIALECT = Dialect(
    invalid=422,
    too_long=422,
    rate_limited=429,
    no_credits=402,
    unauthorized_msg="You do not have access permissions",
    sync_upload_error=True,
    prompt_required=True,
    repeats_error_in_response=True,
)


def dialect_for(profile: ProviderProfile) -> Dialect:
    """kie's codes for the kie profile, the shared apibox/sunoapi table otherwise. api.box's
    newest (V6) revision makes ``prompt`` optional, so only there is it not required."""
    if profile.name == "kie":
        return _KIE_DIALECT
    # Every provider's add-vocals page (apibox's included) lists ``prompt`` as required: a
    # client tested against the simulator must send it, as it must for the real API.
    return _APIBOX_DIALECT


MESSAGES: Mapping[int, str] = {
    200: "success",
    401: "Unauthorized",
    402: "Insufficient credits",
    404: "Not found",
    405: "Rate limit exceeded, please back off and retry",
    413: "The prompt is too long",
    429: "Too many requests",
    430: "Request frequency too high, try again later",
    451: "Failed to fetch the file at uploadUrl",
    455: "System maintenance, please try again later",
    500: "Server Error - please try again later",
}


def envelope(code: int, msg: str | None = None, data: Any = None) -> dict[str, Any]:
    """The ``{"code", "msg", "data"}`` object every endpoint answers."""
    return {"code": code, "msg": MESSAGES.get(code, "error") if msg is None else msg, "data": data}


@attrs.frozen
class Rejection:
    """Why a request is refused: the envelope code and a message a person can act on."""

    code: int
    msg: str


_REQUIRED = ("uploadUrl", "callBackUrl", "title", "style", "negativeTags")
_WEIGHTS = ("styleWeight", "weirdnessConstraint", "audioWeight")
_LYRICS_LIMIT = 5000


def _present(body: Mapping[str, Any], key: str) -> bool:
    """Optional fields sent as ``null`` count as omitted (the docs do not say; lenient)."""
    return body.get(key) is not None


def _is_http_url(value: str) -> bool:
    try:
        url = yarl.URL(value)
    except (ValueError, TypeError):
        return False
    return url.is_absolute() and url.scheme in ("http", "https") and bool(url.host)


def engine_name(model: str) -> str:
    """The ``model_name`` a track reports: the engine family, as in the API's samples
    (``chirp-v4-5`` for a V4_5PLUS request), not an echo of the request's ``model``."""
    family = re.sub(r"(ALL|PLUS|WILD|MINI)$", "", str(model).upper()).rstrip("_")
    return "chirp-" + family.lower().replace("_", "-")


def validate_submit(body: Any, profile: ProviderProfile, dialect: Dialect) -> Rejection | None:
    """Check a submit body's required fields, types, ranges and per-model length
    limits; ``None`` when it is acceptable. Unknown keys
    are ignored, as the API does (*inferred*)."""
    bad = dialect.invalid
    if not isinstance(body, dict):
        return Rejection(bad, "The request body must be a JSON object")
    required = _REQUIRED + (("prompt",) if dialect.prompt_required else ())
    for key in required:
        value = body.get(key)
        if not isinstance(value, str) or not value.strip():
            return Rejection(bad, f"{key} is required and must be a non-empty string")
    for key in ("prompt", "lyrics"):
        if _present(body, key) and not isinstance(body[key], str):
            return Rejection(bad, f"{key} must be a string")
    for key in ("uploadUrl", "callBackUrl"):
        if not _is_http_url(body[key]):
            return Rejection(bad, f"{key} must be an absolute http(s) URL")
    model = body.get("model")
    if model is None:
        model = profile.default_model
    elif not isinstance(model, str) or model not in profile.models:
        return Rejection(bad, f"model must be one of {', '.join(profile.models)}")
    if _present(body, "vocalGender") and body["vocalGender"] not in ("m", "f"):
        return Rejection(bad, "vocalGender must be 'm' or 'f'")
    for key in _WEIGHTS:
        if not _present(body, key):
            continue
        value = body[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not 0 <= value <= 1
            or abs(value * 100 - round(value * 100)) >= 1e-9
        ):
            return Rejection(bad, f"{key} must be a number from 0 to 1 in steps of 0.01")
    if _present(body, "variety"):
        variety = body["variety"]
        if isinstance(variety, bool) or not isinstance(variety, int) or not 0 <= variety <= 4:
            return Rejection(bad, "variety must be an integer from 0 to 4")
    limits = profile.limits(model)
    if len(body.get("prompt") or "") > limits.prompt:
        return Rejection(dialect.too_long, f"prompt exceeds {limits.prompt} characters")
    if len(body.get("lyrics") or "") > _LYRICS_LIMIT:
        return Rejection(dialect.too_long, f"lyrics exceed {_LYRICS_LIMIT} characters")
    for key, limit in (
        ("style", limits.style),
        ("title", limits.title),
        ("negativeTags", limits.negative_tags),
    ):
        if len(body[key]) > limit:
            return Rejection(bad, f"{key} exceeds {limit} characters for model {model}")
    return None


# ------------------------------------------------------------------- kie's callback signature


def oracle_signature(key: bytes, task_id: str, timestamp: int) -> str:
    """kie's ``X-Webhook-Signature``: ``base64(HMAC-SHA256(key, taskId + "." + timestamp))``,
    standard padded Base64. Written here independently of the SDK's ``sign_webhook``, so that
    a test comparing the two is an oracle, not the SDK checking itself."""
    digest = hmac.new(key, f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


# ------------------------------------------------------------------------ JSON builders


def format_create_time(when: datetime, epoch_ms: bool) -> str | int:
    """``createTime`` in one of its two documented forms: epoch milliseconds, or
    ``YYYY-MM-DD HH:MM:SS`` in UTC with no zone."""
    if epoch_ms:
        return int(when.timestamp() * 1000)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def callback_track(
    track: SimTrack, *, partial: bool, create_time: str | int, include_source: bool
) -> dict[str, Any]:
    """A track as callbacks carry it: snake_case except ``createTime``. A partial
    track (the second one in ``first``) has ``audio_url: ""``, no ``duration`` and no
    ``source_audio_url``, as seen in real traffic."""
    out: dict[str, Any] = {
        "id": track.id,
        "title": track.title,
        "model_name": track.model_name,
        "audio_url": "" if partial else track.audio_url,
    }
    if include_source and not partial:
        out["source_audio_url"] = track.source_audio_url
    out["stream_audio_url"] = track.stream_audio_url
    if include_source:
        out["source_stream_audio_url"] = track.source_stream_audio_url
    out["image_url"] = track.image_url
    if include_source:
        out["source_image_url"] = track.source_image_url
    out["prompt"] = track.prompt
    if include_source:
        out["tags"] = track.tags
    out["createTime"] = create_time
    if not partial:
        out["duration"] = track.duration
    return out


def details_track(
    track: SimTrack, *, partial: bool, create_time: str | int, include_source: bool
) -> dict[str, Any]:
    """A track as record-info's ``sunoData`` carries it: camelCase. ``tags`` is in
    the schema for every provider; the ``source*`` fields only where the provider has them."""
    out: dict[str, Any] = {
        "id": track.id,
        "title": track.title,
        "modelName": track.model_name,
        "audioUrl": "" if partial else track.audio_url,
        "streamAudioUrl": track.stream_audio_url,
        "imageUrl": track.image_url,
    }
    if include_source:
        if not partial:
            out["sourceAudioUrl"] = track.source_audio_url
        out["sourceStreamAudioUrl"] = track.source_stream_audio_url
        out["sourceImageUrl"] = track.source_image_url
    out["createTime"] = create_time
    if not partial:
        out["duration"] = track.duration
    out["prompt"] = track.prompt
    out["tags"] = track.tags
    return out


_CALLBACK_MESSAGES: Mapping[str, str] = {
    "text": "Text generation completed successfully.",
    "first": "First track generated successfully.",
    "complete": "All generated successfully.",
}


def callback_body(
    task: SimTask,
    callback_type: str,
    *,
    create_time: str | int,
    include_source: bool,
    error_data: Literal["null", "empty_list"],
) -> dict[str, Any]:
    """The JSON body of one callback, for ``callback_type`` ``text``, ``first``,
    ``complete``, ``error``, or any other (unknown) type, which gets extra unknown fields
    to exercise loose parsing."""
    data: dict[str, Any] = {"callbackType": callback_type, "task_id": task.task_id}
    if callback_type == "text":
        data["data"] = []
    elif callback_type in ("first", "complete"):
        partial_second = callback_type == "first"
        data["data"] = [
            callback_track(
                track,
                partial=partial_second and track.index > 0,
                create_time=create_time,
                include_source=include_source,
            )
            for track in task.tracks
        ]
    elif callback_type == "error":
        data["data"] = None if error_data == "null" else []
        code = task.error_code if task.error_code is not None else 500
        return {"code": code, "msg": task.error_message or "Task failed", "data": data}
    else:
        data["data"] = []
        data["progress"] = 0.5
        data["stageDetail"] = {"name": "vocal_mix", "eta": 40}
        return {
            "code": 200,
            "msg": "Vocal mixing in progress.",
            "data": data,
            "traceId": f"trace-{task.task_id[:12]}",
        }
    return {"code": 200, "msg": _CALLBACK_MESSAGES[callback_type], "data": data}


def details_data(
    task: SimTask,
    *,
    create_time: str | int,
    include_source: bool,
    legacy: bool,
    repeat_error: bool,
) -> dict[str, Any]:
    """record-info's ``data`` object for ``task`` as it stands now: ``param`` is the
    submit body serialized into a string, tracks follow the furthest stage reached."""
    if task.stage == "pending":
        response: dict[str, Any] | None = None
    else:
        tracks: list[dict[str, Any]] = []
        if task.stage in ("first", "complete"):
            build = callback_track if legacy else details_track
            tracks = [
                build(
                    track,
                    partial=task.stage == "first" and track.index > 0,
                    create_time=create_time,
                    include_source=include_source,
                )
                for track in task.tracks
            ]
        response = {"taskId": task.task_id, ("data" if legacy else "sunoData"): tracks}
        if task.stage == "failed" and repeat_error:
            response["errorMessage"] = task.error_message
    failed = task.stage == "failed"
    return {
        "taskId": task.task_id,
        "parentMusicId": "",
        "param": json.dumps(task.request, ensure_ascii=False, separators=(",", ":")),
        "response": response,
        "status": task.status,
        "type": "GENERATE",
        "errorCode": task.error_code if failed else None,
        "errorMessage": task.error_message if failed else None,
    }
