"""Hypothesis strategies shared by the test modules, one definition each.

Requests (``REQUESTS``), tracks and callback events that round-trip (``TRACKS``,
``EVENTS``), hostile JSON that must never crash a parser (``ANY_JSON``, ``CALLBACKISH``,
``DETAILSISH`` and the well-formed-outside, hostile-inside variants), and callback
sequences for the stage machine (``STAGE_EVENTS``).
"""

from __future__ import annotations

from datetime import timedelta, timezone

import attrs
from helpers import OTHER_TASK, TASK
from hypothesis import strategies as st

from addvocals_async import AddVocalsRequest, CallbackEvent, Track
from addvocals_async._convert import snake_case
from addvocals_async._providers import KNOWN_MODELS
from addvocals_async._validation import UncheckedModel

UTC = timezone.utc

# ---------------------------------------------------------------- requests

URLS = st.sampled_from(
    [
        "https://cdn.example.org/a.mp3",
        "http://127.0.0.1:8080/cb/x",
        "https://hooks.example.com/addvocals/cb/Zr81mT0qWc?x=1",
    ]
)


TEXT = st.text(min_size=1, max_size=40).filter(str.strip)


WEIGHT = (
    st.none()
    | st.integers(0, 100).map(lambda k: k / 100)
    | st.integers(0, 100).map(lambda k: k * 0.01)
)


MODEL = (
    st.none()
    | st.sampled_from(KNOWN_MODELS)
    | st.sampled_from(["V7", "V6_ULTRA"]).map(UncheckedModel)
)


REQUESTS = st.builds(
    AddVocalsRequest,
    upload_url=URLS,
    prompt=TEXT,
    title=TEXT,
    style=TEXT,
    negative_tags=TEXT,
    callback_url=st.none() | URLS,
    vocal_gender=st.none() | st.sampled_from(["m", "f"]),
    style_weight=WEIGHT,
    weirdness_constraint=WEIGHT,
    audio_weight=WEIGHT,
    model=MODEL,
    lyrics=st.none() | TEXT,
    variety=st.none() | st.integers(0, 4),
)


# ---------------------------------------------------------------- tracks and events

FIELD_NAMES = {f.name for f in attrs.fields(Track)}


OFFSETS = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


AWARE = st.datetimes(timezones=OFFSETS | st.just(UTC))


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)


JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def not_a_track_field(key: str) -> bool:
    return key not in FIELD_NAMES and snake_case(key) not in FIELD_NAMES and key != "createTime"


EXTRA_KEYS = st.text(min_size=1, max_size=12).filter(not_a_track_field)


TRACKS = st.builds(
    Track,
    id=st.text(max_size=40),
    audio_url=st.text(max_size=40),
    stream_audio_url=st.text(max_size=20),
    image_url=st.text(max_size=20),
    prompt=st.text(max_size=40),
    model_name=st.text(max_size=10),
    title=st.text(max_size=20),
    tags=st.text(max_size=20),
    create_time=st.none() | AWARE,
    duration=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    source_audio_url=st.text(max_size=20),
    source_stream_audio_url=st.text(max_size=20),
    source_image_url=st.text(max_size=20),
    extra=st.dictionaries(EXTRA_KEYS, JSON_VALUES, max_size=3),
)


EVENTS = st.builds(
    CallbackEvent,
    # Task ids as the SDK carries them (``is_task_id``): printable, encodable text.
    task_id=st.text(
        st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Co", "Cn", "Zl", "Zp", "Zs")),
        min_size=1,
        max_size=40,
    ),
    callback_type=st.sampled_from(["text", "first", "complete", "error"]) | st.text(max_size=12),
    code=st.sampled_from([200, 400, 408, 413, 451, 500, 501, 531]) | st.integers(),
    msg=st.text(max_size=40),
    tracks=st.lists(TRACKS, max_size=3).map(tuple),
    extra=st.dictionaries(
        st.text(min_size=1, max_size=12).filter(lambda k: k not in ("code", "msg", "data")),
        JSON_VALUES,
        max_size=3,
    ),
)


# ---------------------------------------------------------------- hostile input

ODD_STRINGS = st.sampled_from(
    [
        "",
        "2026-01-01 12:01:45",
        "2026-01-01T12:01:45Z",
        "1767268905123",
        "-1",
        "²",
        "1" * 5000,
        "NaN",
        "null",
        "{not json",
        '{"title": "x"}',
        "SUCCESS",
        "CALLBACK_EXCEPTION",
        "error",
    ]
)


ANY_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 2**63])
    | st.floats()
    | st.text(max_size=20)
    | ODD_STRINGS
)


ANY_JSON = st.recursive(
    ANY_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)


TRACK_KEYS = st.sampled_from(
    [*sorted(FIELD_NAMES - {"extra"}), "createTime", "audioUrl", "modelName", "sourceImageUrl"]
)


HOSTILE = ANY_SCALARS | ANY_JSON  # scalars more often: they reach the field parsers


TRACKISH = st.dictionaries(TRACK_KEYS | st.text(max_size=6), HOSTILE, max_size=8)


TRACK_LISTS = st.lists(TRACKISH, min_size=1, max_size=3)


CALLBACKISH = st.fixed_dictionaries(
    {},
    optional={
        "code": ANY_JSON,
        "msg": ANY_JSON,
        "taskId": ANY_JSON,
        "data": ANY_JSON
        | st.fixed_dictionaries(
            {},
            optional={
                "callbackType": ANY_JSON,
                "callback_type": ANY_JSON,
                "task_id": ANY_JSON | st.text(min_size=1),
                "taskId": ANY_JSON,
                "data": ANY_JSON | st.lists(TRACKISH | ANY_JSON, max_size=3),
            },
        ),
    },
)


WELL_FORMED_CALLBACK = st.fixed_dictionaries(
    {
        "code": HOSTILE,
        "msg": HOSTILE,
        "data": st.fixed_dictionaries(
            {"callbackType": HOSTILE, "task_id": st.text(min_size=1), "data": TRACK_LISTS}
        ),
    }
)


WELL_FORMED_DETAILS = st.fixed_dictionaries(
    {
        "status": HOSTILE,
        "errorCode": HOSTILE,
        "param": HOSTILE,
        "response": st.fixed_dictionaries({"sunoData": TRACK_LISTS}),
    }
)


DETAILSISH = st.fixed_dictionaries(
    {},
    optional={
        "taskId": ANY_JSON,
        "status": ANY_JSON,
        "param": ANY_JSON,
        "errorCode": ANY_JSON,
        "errorMessage": ANY_JSON,
        "type": ANY_JSON,
        "operationType": ANY_JSON,
        "parentMusicId": ANY_JSON,
        "response": ANY_JSON
        | st.fixed_dictionaries(
            {},
            optional={
                "sunoData": ANY_JSON | st.lists(TRACKISH, max_size=3),
                "data": ANY_JSON | st.lists(TRACKISH, max_size=3),
                "errorMessage": ANY_JSON,
            },
        ),
    },
)


# ---------------------------------------------------------------- the stage machine

CALLBACK_TYPES = st.sampled_from(["text", "first", "complete", "error", "progress", ""])


CALLBACK_CODES = st.sampled_from([200, 200, 200, 400, 451, 500, 531])


STAGE_EVENTS = st.builds(
    CallbackEvent,
    task_id=st.sampled_from([TASK, TASK, TASK, OTHER_TASK]),
    callback_type=CALLBACK_TYPES,
    code=CALLBACK_CODES,
    msg=st.text(max_size=10),
    tracks=st.lists(st.builds(Track, id=st.uuids().map(str)), max_size=2).map(tuple),
)
