# ruff: noqa: E501  (the spec's examples are pasted verbatim, long lines included)
"""The wire converter (API-SPEC §2, §4.3, §4.5, §5): request bodies, callbacks, record-info.

Loose in, strict out: every quirk the spec lists is fed in as written there.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from helpers import TASK, callback
from hypothesis import given, settings
from strategies import (
    ANY_JSON,
    CALLBACKISH,
    DETAILSISH,
    EVENTS,
    FIELD_NAMES,
    REQUESTS,
    TRACKS,
    WELL_FORMED_CALLBACK,
    WELL_FORMED_DETAILS,
    not_a_track_field,
)

from addvocals_async import AddVocalsRequest, CallbackEvent, Stage, TaskDetails, Track
from addvocals_async._convert import (
    MAX_TRACKS,
    CallbackParseError,
    WireFormat,
    callback_task_id,
    camel_case,
    parse_create_time,
    snake_case,
    wire,
)

UTC = timezone.utc
TRACK_1 = "3433e3c3-7ccb-4e6a-8454-33cb20e33908"
TRACK_2 = "6b3a6438-47c3-4630-975b-9a74d6b07826"
LYRICS = "[Verse] Lanterns on the water, slow and gold"

# ---------------------------------------------------------------- spec examples, verbatim

SPEC_SUBMIT_BODY = r"""{"uploadUrl": "https://cdn.example.org/stems/harbour-instrumental.wav",
 "callBackUrl": "https://hooks.example.com/addvocals/cb/Zr81mT0qWc",
 "prompt": "A warm, breathy female vocal about lanterns on a quiet harbour at night",
 "title": "Harbour Lanterns", "style": "Neo Soul", "negativeTags": "Screamo, Distorted Vocals, Autotune",
 "vocalGender": "f", "styleWeight": 0.55, "weirdnessConstraint": 0.3, "audioWeight": 0.8, "model": "V5"}"""

CB_TEXT = r"""{"code": 200, "msg": "Text generation completed successfully.",
 "data": {"callbackType": "text", "task_id": "4d8e0f3a91b27c65e0a4f1d9b3c87e52", "data": []}}"""

CB_FIRST = r"""{"code": 200, "msg": "First track generated successfully.",
 "data": {"callbackType": "first", "task_id": "4d8e0f3a91b27c65e0a4f1d9b3c87e52", "data": [
  {"id": "3433e3c3-7ccb-4e6a-8454-33cb20e33908", "title": "Harbour Lanterns", "model_name": "chirp-v4-5",
   "audio_url": "https://files.example.org/av/3433e3c3.mp3", "source_audio_url": "https://origin.example.com/3433e3c3.mp3",
   "stream_audio_url": "https://stream.example.org/3433e3c3", "source_stream_audio_url": "https://origin.example.com/s/3433e3c3",
   "image_url": "https://img.example.org/3433e3c3.jpeg", "source_image_url": "https://origin.example.com/i/3433e3c3.jpeg",
   "prompt": "[Verse] Lanterns on the water, slow and gold", "tags": "neo soul, breathy, night",
   "createTime": 1767268905123, "duration": 174.62},
  {"id": "6b3a6438-47c3-4630-975b-9a74d6b07826", "title": "Harbour Lanterns", "model_name": "chirp-v4-5", "audio_url": "",
   "stream_audio_url": "https://stream.example.org/6b3a6438", "source_stream_audio_url": "https://origin.example.com/s/6b3a6438",
   "image_url": "https://img.example.org/6b3a6438.jpeg", "source_image_url": "https://origin.example.com/i/6b3a6438.jpeg",
   "prompt": "[Verse] Lanterns on the water, slow and gold", "tags": "neo soul, breathy, night",
   "createTime": 1767268905123}]}}"""

CB_COMPLETE = r"""{"code": 200, "msg": "All generated successfully.",
 "data": {"callbackType": "complete", "task_id": "4d8e0f3a91b27c65e0a4f1d9b3c87e52", "data": [
  {"id": "3433e3c3-7ccb-4e6a-8454-33cb20e33908", "title": "Harbour Lanterns", "model_name": "chirp-v4-5",
   "audio_url": "https://files.example.org/av/3433e3c3.mp3", "source_audio_url": "https://origin.example.com/3433e3c3.mp3",
   "stream_audio_url": "https://stream.example.org/3433e3c3", "source_stream_audio_url": "https://origin.example.com/s/3433e3c3",
   "image_url": "https://img.example.org/3433e3c3.jpeg", "source_image_url": "https://origin.example.com/i/3433e3c3.jpeg",
   "prompt": "[Verse] Lanterns on the water, slow and gold", "tags": "neo soul, breathy, night",
   "createTime": "2026-01-01 12:01:45", "duration": 174.62},
  {"id": "6b3a6438-47c3-4630-975b-9a74d6b07826", "title": "Harbour Lanterns", "model_name": "chirp-v4-5",
   "audio_url": "https://files.example.org/av/6b3a6438.mp3", "source_audio_url": "https://origin.example.com/6b3a6438.mp3",
   "stream_audio_url": "https://stream.example.org/6b3a6438", "source_stream_audio_url": "https://origin.example.com/s/6b3a6438",
   "image_url": "https://img.example.org/6b3a6438.jpeg", "source_image_url": "https://origin.example.com/i/6b3a6438.jpeg",
   "prompt": "[Verse] Lanterns on the water, slow and gold", "tags": "neo soul, breathy, night",
   "createTime": "2026-01-01 12:01:45", "duration": 181.3}]}}"""

CB_ERROR = r"""{"code": 451, "msg": "Could not download the source audio",
 "data": {"callbackType": "error", "task_id": "7e82ee581cec5cc6e587cc02409dab36", "data": null}}"""

RI_SUCCESS = r"""{"code": 200, "msg": "success", "data": {
  "taskId": "4d8e0f3a91b27c65e0a4f1d9b3c87e52", "parentMusicId": "",
  "param": "{\"uploadUrl\":\"https://cdn.example.org/stems/harbour-instrumental.wav\",\"title\":\"Harbour Lanterns\",\"style\":\"Neo Soul\",\"model\":\"V5\"}",
  "response": {"taskId": "4d8e0f3a91b27c65e0a4f1d9b3c87e52", "sunoData": [
    {"id": "3433e3c3-7ccb-4e6a-8454-33cb20e33908", "title": "Harbour Lanterns", "modelName": "chirp-v4-5",
     "audioUrl": "https://files.example.org/av/3433e3c3.mp3", "streamAudioUrl": "https://stream.example.org/3433e3c3",
     "imageUrl": "https://img.example.org/3433e3c3.jpeg", "createTime": "2026-01-01 12:01:45", "duration": 174.62,
     "prompt": "[Verse] Lanterns on the water, slow and gold", "tags": "neo soul, breathy, night"},
    {"id": "6b3a6438-47c3-4630-975b-9a74d6b07826", "title": "Harbour Lanterns", "modelName": "chirp-v4-5",
     "audioUrl": "https://files.example.org/av/6b3a6438.mp3", "streamAudioUrl": "https://stream.example.org/6b3a6438",
     "imageUrl": "https://img.example.org/6b3a6438.jpeg", "createTime": "2026-01-01 12:01:45", "duration": 181.3,
     "prompt": "[Verse] Lanterns on the water, slow and gold", "tags": "neo soul, breathy, night"}]},
  "status": "SUCCESS", "type": "GENERATE", "errorCode": null, "errorMessage": null}}"""

RI_PENDING = r"""{"code": 200, "msg": "success", "data": {
  "taskId": "9d61106748dc3163338b99b90a4e82ce", "parentMusicId": "",
  "param": "{\"title\":\"Salt Road\",\"style\":\"Folk\",\"model\":\"V4_5PLUS\"}",
  "response": null, "status": "PENDING", "type": "GENERATE", "errorCode": null, "errorMessage": null}}"""

RI_FAILED_KIE = r"""{"code": 200, "msg": "success", "data": {
  "taskId": "7e82ee581cec5cc6e587cc02409dab36", "parentMusicId": "",
  "param": "{\"title\":\"Glass Orchard\",\"style\":\"Dream Pop\"}",
  "response": {"taskId": "7e82ee581cec5cc6e587cc02409dab36", "sunoData": [],
               "errorMessage": "Audio generation failed, please retry"},
  "status": "GENERATE_AUDIO_FAILED", "type": "GENERATE", "errorCode": 501,
  "errorMessage": "Audio generation failed, please retry"}}"""

WALL = datetime(2026, 1, 1, 12, 1, 45, tzinfo=UTC)
WALL_MS = datetime(2026, 1, 1, 12, 1, 45, 123000, tzinfo=UTC)


def details(envelope: str, task_id: str = "asked-for") -> TaskDetails:
    return wire.structure_details(json.loads(envelope)["data"], task_id)


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("camel", "snake"),
    [
        ("audioUrl", "audio_url"),
        ("streamAudioUrl", "stream_audio_url"),
        ("sourceAudioUrl", "source_audio_url"),
        ("modelName", "model_name"),
        ("createTime", "create_time"),
        ("taskId", "task_id"),
        ("id", "id"),
    ],
)
def test_case_conversion(camel: str, snake: str) -> None:
    assert snake_case(camel) == snake
    assert snake_case(snake) == snake  # idempotent on snake_case
    assert camel_case(snake) == camel


# ---------------------------------------------------------------- request body


def spec_request() -> AddVocalsRequest:
    return AddVocalsRequest(
        upload_url="https://cdn.example.org/stems/harbour-instrumental.wav",
        callback_url="https://hooks.example.com/addvocals/cb/Zr81mT0qWc",
        prompt="A warm, breathy female vocal about lanterns on a quiet harbour at night",
        title="Harbour Lanterns",
        style="Neo Soul",
        negative_tags="Screamo, Distorted Vocals, Autotune",
        vocal_gender="f",
        style_weight=0.55,
        weirdness_constraint=0.3,
        audio_weight=0.8,
        model="V5",
    )


def test_request_body_matches_spec_example_exactly() -> None:
    body = wire.unstructure_request(spec_request())
    assert body == json.loads(SPEC_SUBMIT_BODY)


def test_callback_url_has_capital_b() -> None:
    body = wire.unstructure_request(spec_request())
    assert "callBackUrl" in body
    assert "callbackUrl" not in body
    assert "callback_url" not in body


def test_unset_optionals_are_omitted_not_null() -> None:
    request = AddVocalsRequest(
        upload_url="https://cdn.example.org/a.mp3",
        prompt="p",
        title="t",
        style="s",
        negative_tags="n",
    )
    body = wire.unstructure_request(request)
    assert body == {
        "uploadUrl": "https://cdn.example.org/a.mp3",
        "prompt": "p",
        "title": "t",
        "style": "s",
        "negativeTags": "n",
    }
    assert None not in body.values()


def test_newer_fields_are_camel_case() -> None:
    body = wire.unstructure_request(
        attrs.evolve(spec_request(), lyrics="[Verse] hi", variety=0, style_weight=0.0)
    )
    assert body["lyrics"] == "[Verse] hi"
    assert body["variety"] == 0  # zero is a value, not "unset"
    assert body["styleWeight"] == 0


def test_weights_are_rounded_to_the_grid() -> None:
    request = attrs.evolve(
        spec_request(), style_weight=0.1 + 0.2, weirdness_constraint=0.57, audio_weight=0.07 * 3
    )
    body = wire.unstructure_request(request)
    assert body["styleWeight"] == 0.3
    assert body["weirdnessConstraint"] == 0.57
    assert body["audioWeight"] == 0.21
    assert '"styleWeight": 0.3,' in json.dumps(body)


WIRE_NAMES = {
    "upload_url": "uploadUrl",
    "callback_url": "callBackUrl",
    "prompt": "prompt",
    "title": "title",
    "style": "style",
    "negative_tags": "negativeTags",
    "vocal_gender": "vocalGender",
    "style_weight": "styleWeight",
    "weirdness_constraint": "weirdnessConstraint",
    "audio_weight": "audioWeight",
    "model": "model",
    "lyrics": "lyrics",
    "variety": "variety",
}


def test_wire_names_cover_every_request_field() -> None:
    assert {f.name for f in attrs.fields(AddVocalsRequest)} == set(WIRE_NAMES)


@given(REQUESTS)
@settings(max_examples=150)
def test_any_valid_request_has_only_known_camel_keys(request: AddVocalsRequest) -> None:
    body = wire.unstructure_request(request)
    assert set(body) <= set(WIRE_NAMES.values())
    assert None not in body.values()
    for field, key in WIRE_NAMES.items():
        value = getattr(request, field)
        if value is None:
            assert key not in body
        elif field in ("style_weight", "weirdness_constraint", "audio_weight"):
            assert body[key] == round(body[key], 2)
            assert abs(body[key] - value) < 1e-9
        else:
            assert body[key] == value
    assert json.loads(json.dumps(body, allow_nan=False)) == body


# ---------------------------------------------------------------- createTime


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01 12:01:45", WALL),
        (" 2026-01-01 12:01:45 ", WALL),
        (1767268905123, WALL_MS),
        ("1767268905123", WALL_MS),
        (1767268905123.0, WALL_MS),
        ("2026-01-01T12:01:45Z", WALL),
        ("2026-01-01T12:01:45z", WALL),
        ("2026-01-01T12:01:45.123Z", WALL_MS),
        ("2026-01-01T12:01:45+00:00", WALL),
        ("2026-01-01T14:01:45+02:00", WALL),
        ("2026-01-01T07:01:45-05:00", WALL),
        ("2026-01-01T12:01:45", WALL),
    ],
)
def test_create_time_forms(value: object, expected: datetime) -> None:
    parsed = parse_create_time(value)
    assert parsed == expected
    assert parsed is not None
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() is not None


def test_plain_form_is_utc_by_default() -> None:
    parsed = parse_create_time("2026-01-01 12:01:45")
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(0)
    assert (parsed.hour, parsed.minute, parsed.second) == (12, 1, 45)


def test_offset_is_kept() -> None:
    parsed = parse_create_time("2026-01-01T14:01:45+02:00")
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "garbage",
        "2026-13-01 12:00:00",
        "12:01",
        "yesterday",
        True,
        False,
        [1767268905123],
        {"t": 1},
        math.nan,
        math.inf,
        10**400,  # beyond float
        "1" * 5000,  # beyond int()'s digit limit
        "²",  # str.isdigit() says yes, int() says no
        "१७६७२६८९०५",  # Devanagari digits are not an epoch
        "-",
    ],
)
def test_bad_create_time_is_none(value: object) -> None:
    assert parse_create_time(value) is None


def test_naive_zone_is_configurable() -> None:
    plus8 = timezone(timedelta(hours=8))
    fmt = WireFormat(naive_tz=plus8)
    track = fmt.structure_track({"createTime": "2026-01-01 12:01:45"})
    assert track.create_time == datetime(2026, 1, 1, 4, 1, 45, tzinfo=UTC)
    assert track.create_time is not None
    assert track.create_time.utcoffset() == timedelta(hours=8)
    # explicit zones and epoch values ignore the setting
    assert fmt.structure_track({"createTime": "2026-01-01T12:01:45Z"}).create_time == WALL
    assert fmt.structure_track({"createTime": 1767268905123}).create_time == WALL_MS
    # and the default converter is untouched
    assert wire.structure_track({"createTime": "2026-01-01 12:01:45"}).create_time == WALL
    assert parse_create_time("2026-01-01 12:01:45", plus8) == datetime(
        2026, 1, 1, 4, 1, 45, tzinfo=UTC
    )


def test_naive_zone_applies_to_callbacks_and_details() -> None:
    fmt = WireFormat(naive_tz=timezone(timedelta(hours=-3)))
    event = fmt.structure_callback(json.loads(CB_COMPLETE))
    assert event.tracks[0].create_time == WALL + timedelta(hours=3)
    info = fmt.structure_details(json.loads(RI_SUCCESS)["data"], TASK)
    assert info.tracks[0].create_time == WALL + timedelta(hours=3)


# ---------------------------------------------------------------- callbacks from §4.5


def test_text_callback() -> None:
    event = wire.structure_callback(json.loads(CB_TEXT))
    assert event == CallbackEvent(
        task_id=TASK,
        callback_type="text",
        code=200,
        msg="Text generation completed successfully.",
    )
    assert event.stage is Stage.TEXT
    assert not event.is_failure


def test_first_callback_with_partial_second_track() -> None:
    event = wire.structure_callback(json.loads(CB_FIRST))
    assert event.task_id == TASK
    assert event.callback_type == "first"
    assert event.code == 200
    assert event.stage is Stage.FIRST
    one, two = event.tracks
    assert one == Track(
        id=TRACK_1,
        audio_url="https://files.example.org/av/3433e3c3.mp3",
        stream_audio_url="https://stream.example.org/3433e3c3",
        image_url="https://img.example.org/3433e3c3.jpeg",
        prompt=LYRICS,
        model_name="chirp-v4-5",
        title="Harbour Lanterns",
        tags="neo soul, breathy, night",
        create_time=WALL_MS,
        duration=174.62,
        source_audio_url="https://origin.example.com/3433e3c3.mp3",
        source_stream_audio_url="https://origin.example.com/s/3433e3c3",
        source_image_url="https://origin.example.com/i/3433e3c3.jpeg",
    )
    assert one.is_finished
    assert one.extra == {}
    assert two.id == TRACK_2
    assert two.audio_url == ""
    assert not two.is_finished
    assert two.duration is None
    assert two.source_audio_url == ""
    assert two.stream_audio_url == "https://stream.example.org/6b3a6438"
    assert two.create_time == WALL_MS


def test_complete_callback() -> None:
    event = wire.structure_callback(json.loads(CB_COMPLETE))
    assert event.stage is Stage.COMPLETE
    assert event.msg == "All generated successfully."
    assert [t.id for t in event.tracks] == [TRACK_1, TRACK_2]
    assert [t.duration for t in event.tracks] == [174.62, 181.3]
    assert all(t.create_time == WALL for t in event.tracks)
    assert all(t.is_finished for t in event.tracks)
    assert event.tracks[1].audio_url == "https://files.example.org/av/6b3a6438.mp3"
    assert event.extra == {}


@pytest.mark.parametrize("inner", [None, []])
def test_error_callback_with_null_or_empty_data(inner: list[Any] | None) -> None:
    body = json.loads(CB_ERROR)
    body["data"]["data"] = inner
    event = wire.structure_callback(body)
    assert event.task_id == "7e82ee581cec5cc6e587cc02409dab36"
    assert event.callback_type == "error"
    assert event.code == 451
    assert event.msg == "Could not download the source audio"
    assert event.tracks == ()
    assert event.is_failure
    assert event.stage is Stage.FAILED


def test_error_callback_verbatim_has_null_data() -> None:
    assert json.loads(CB_ERROR)["data"]["data"] is None
    assert wire.structure_callback(json.loads(CB_ERROR)).tracks == ()


def test_kie_complete_without_source_fields() -> None:
    body = json.loads(CB_COMPLETE)
    for track in body["data"]["data"]:
        for key in ("source_audio_url", "source_stream_audio_url", "source_image_url", "tags"):
            del track[key]
    event = wire.structure_callback(body)
    assert all(t.source_audio_url == "" and t.tags == "" for t in event.tracks)
    assert all(t.is_finished for t in event.tracks)


def test_non_200_code_is_failure_whatever_the_type() -> None:
    body = json.loads(CB_COMPLETE)
    body["code"] = 531
    event = wire.structure_callback(body)
    assert event.is_failure
    assert event.stage is Stage.FAILED


def test_unknown_callback_type_is_kept_and_has_no_stage() -> None:
    body = json.loads(CB_TEXT)
    body["data"]["callbackType"] = "lyrics_aligned"
    event = wire.structure_callback(body)
    assert event.callback_type == "lyrics_aligned"
    assert not event.is_failure
    assert event.stage is None


def test_missing_code_reads_as_success_unless_error() -> None:
    body = json.loads(CB_TEXT)
    del body["code"]
    assert wire.structure_callback(body).code == 200
    error = json.loads(CB_ERROR)
    del error["code"]
    parsed = wire.structure_callback(error)
    assert parsed.code != 200
    assert parsed.is_failure


def test_code_as_string_is_read() -> None:
    body = json.loads(CB_ERROR)
    body["code"] = "451"
    assert wire.structure_callback(body).code == 451


def test_callback_snake_case_type_key_accepted() -> None:
    body = {"code": 200, "msg": "ok", "data": {"callback_type": "first", "task_id": "t1"}}
    assert wire.structure_callback(body).callback_type == "first"


def test_callback_unknown_fields_kept() -> None:
    body = json.loads(CB_TEXT)
    body["data"]["region"] = "eu"
    body["traceId"] = "abc"
    event = wire.structure_callback(body)
    assert event.extra == {"region": "eu", "traceId": "abc"}


@pytest.mark.parametrize(
    "body",
    [
        {"code": 200, "msg": "ok", "data": {"callbackType": "text", "data": []}},
        {"code": 200, "msg": "ok", "data": {"callbackType": "text", "task_id": ""}},
        {"code": 200, "msg": "ok", "data": {"callbackType": "text", "task_id": 12345}},
        {"code": 200, "msg": "ok", "data": None},
        {"code": 200, "msg": "ok"},
        {},
        [],
        "text",
        None,
        42,
    ],
)
def test_callback_without_task_id_raises_parse_error(body: object) -> None:
    with pytest.raises(CallbackParseError):
        wire.structure_callback(body)


def test_callback_parse_error_is_a_value_error() -> None:
    assert issubclass(CallbackParseError, ValueError)


def test_task_id_lookup_order() -> None:
    everything = {"taskId": "top", "data": {"task_id": "snake", "taskId": "camel"}}
    assert callback_task_id(everything) == "snake"
    assert callback_task_id({"taskId": "top", "data": {"taskId": "camel"}}) == "top"
    assert callback_task_id({"data": {"taskId": "camel"}}) == "camel"
    assert callback_task_id({"taskId": "top", "data": None}) == "top"
    # empty or non-string candidates are passed over
    assert callback_task_id({"taskId": "top", "data": {"task_id": ""}}) == "top"
    assert callback_task_id({"taskId": 7, "data": {"task_id": None, "taskId": "c"}}) == "c"
    assert callback_task_id({"data": []}) is None


def test_callback_top_level_task_id_only() -> None:
    event = wire.structure_callback(
        {"code": 200, "taskId": "top", "data": {"callbackType": "text"}}
    )
    assert event.task_id == "top"


def test_tracks_that_are_not_objects_are_skipped() -> None:
    body = json.loads(CB_FIRST)
    body["data"]["data"].insert(1, "not a track")
    body["data"]["data"].append(None)
    assert [t.id for t in wire.structure_callback(body).tracks] == [TRACK_1, TRACK_2]


# ---------------------------------------------------------------- tracks


def test_track_camel_and_snake_spellings_agree() -> None:
    snake = json.loads(CB_COMPLETE)["data"]["data"][0]
    camel = json.loads(RI_SUCCESS)["data"]["response"]["sunoData"][0]
    from_snake = wire.structure_track(snake)
    from_camel = wire.structure_track(camel)
    for name in (
        "id",
        "audio_url",
        "stream_audio_url",
        "image_url",
        "prompt",
        "model_name",
        "title",
        "tags",
        "create_time",
        "duration",
    ):
        assert getattr(from_snake, name) == getattr(from_camel, name), name
        assert getattr(from_snake, name) not in ("", None), name


def test_track_source_fields_in_camel_case() -> None:
    track = wire.structure_track(
        {
            "sourceAudioUrl": "https://o.example/a.mp3",
            "sourceStreamAudioUrl": "https://o.example/s",
            "sourceImageUrl": "https://o.example/i.jpeg",
        }
    )
    assert track.source_audio_url == "https://o.example/a.mp3"
    assert track.source_stream_audio_url == "https://o.example/s"
    assert track.source_image_url == "https://o.example/i.jpeg"
    assert track.extra == {}


def test_track_unknown_fields_kept_in_extra() -> None:
    track = wire.structure_track(
        {
            "id": "x",
            "audioUrl": "https://f.example/x.mp3",
            "lyricsAligned": [1, 2],
            "vocal_stem": "s",
        }
    )
    assert track.extra == {"lyricsAligned": [1, 2], "vocal_stem": "s"}
    assert track.audio_url == "https://f.example/x.mp3"


def test_track_loose_values() -> None:
    track = wire.structure_track(
        {"id": 12, "audio_url": None, "duration": "174.62", "title": None, "tags": 5}
    )
    assert track.id == "12"
    assert track.audio_url == ""
    assert track.duration == 174.62
    assert track.title == ""
    assert track.tags == "5"
    assert track.create_time is None


@pytest.mark.parametrize("duration", [None, "", "n/a", math.nan, True, [1], 10**400])
def test_track_unusable_duration_is_none(duration: object) -> None:
    assert wire.structure_track({"duration": duration}).duration is None


def test_empty_track() -> None:
    assert wire.structure_track({}) == Track()


def test_track_not_an_object_raises_parse_error() -> None:
    with pytest.raises(CallbackParseError):
        wire.structure_track(["id"])


def test_unstructure_track_is_callback_spelling() -> None:
    track = wire.structure_track(json.loads(CB_COMPLETE)["data"]["data"][0])
    out = wire.unstructure_track(track)
    assert out["audio_url"] == "https://files.example.org/av/3433e3c3.mp3"
    assert out["model_name"] == "chirp-v4-5"
    assert datetime.fromisoformat(out["createTime"]) == WALL
    assert "create_time" not in out
    assert "extra" not in out


# ---------------------------------------------------------------- record-info (§5)


def test_details_success_sunoapi() -> None:
    info = details(RI_SUCCESS)
    assert info.task_id == TASK
    assert info.status == "SUCCESS"
    assert info.stage is Stage.COMPLETE
    assert info.is_terminal
    assert info.type == "GENERATE"
    assert info.operation_type is None
    assert info.parent_music_id == ""
    assert info.error_code is None
    assert info.error_message is None
    assert info.param == {
        "uploadUrl": "https://cdn.example.org/stems/harbour-instrumental.wav",
        "title": "Harbour Lanterns",
        "style": "Neo Soul",
        "model": "V5",
    }
    assert [t.id for t in info.tracks] == [TRACK_1, TRACK_2]
    first = info.tracks[0]
    assert first.audio_url == "https://files.example.org/av/3433e3c3.mp3"
    assert first.stream_audio_url == "https://stream.example.org/3433e3c3"
    assert first.image_url == "https://img.example.org/3433e3c3.jpeg"
    assert first.model_name == "chirp-v4-5"
    assert first.create_time == WALL
    assert first.duration == 174.62
    assert first.prompt == LYRICS
    assert first.extra == {}
    assert info.extra == {}


def test_details_pending_with_null_response() -> None:
    info = details(RI_PENDING)
    assert info.task_id == "9d61106748dc3163338b99b90a4e82ce"
    assert info.status == "PENDING"
    assert info.stage is Stage.PENDING
    assert not info.is_terminal
    assert info.tracks == ()
    assert info.param == {"title": "Salt Road", "style": "Folk", "model": "V4_5PLUS"}


@pytest.mark.parametrize("response", [{"sunoData": []}, {"sunoData": None}, {}, [], "x"])
def test_details_pending_other_response_shapes(response: object) -> None:
    data = json.loads(RI_PENDING)["data"]
    data["response"] = response
    assert wire.structure_details(data, "t").tracks == ()


def test_details_failed_kie() -> None:
    info = details(RI_FAILED_KIE)
    assert info.task_id == "7e82ee581cec5cc6e587cc02409dab36"
    assert info.status == "GENERATE_AUDIO_FAILED"
    assert info.stage is Stage.FAILED
    assert info.is_terminal
    assert info.error_code == 501
    assert info.error_message == "Audio generation failed, please retry"
    assert info.tracks == ()
    assert info.param == {"title": "Glass Orchard", "style": "Dream Pop"}


def test_details_error_message_falls_back_to_response() -> None:
    data = json.loads(RI_FAILED_KIE)["data"]
    data["errorMessage"] = None
    data["errorCode"] = "500"
    info = wire.structure_details(data, "t")
    assert info.error_message == "Audio generation failed, please retry"
    assert info.error_code == 500


def test_details_legacy_response_data_snake_case() -> None:
    data = json.loads(RI_SUCCESS)["data"]
    data["response"] = {"taskId": TASK, "data": json.loads(CB_COMPLETE)["data"]["data"]}
    info = wire.structure_details(data, TASK)
    assert [t.id for t in info.tracks] == [TRACK_1, TRACK_2]
    assert info.tracks[0].audio_url == "https://files.example.org/av/3433e3c3.mp3"
    assert info.tracks[0].source_audio_url == "https://origin.example.com/3433e3c3.mp3"
    assert info.tracks[1].duration == 181.3
    assert info.stage is Stage.COMPLETE


def test_details_sunodata_preferred_over_legacy_data() -> None:
    data = json.loads(RI_SUCCESS)["data"]
    data["response"]["data"] = [{"id": "legacy"}]
    assert [t.id for t in wire.structure_details(data, TASK).tracks] == [TRACK_1, TRACK_2]


def test_details_data_null_is_young_pending_task() -> None:
    info = wire.structure_details(None, "abc123")
    assert info.task_id == "abc123"
    assert info.status == "PENDING"
    assert info.stage is Stage.PENDING
    assert info.tracks == ()


def test_details_missing_task_id_uses_the_one_asked_for() -> None:
    data = json.loads(RI_PENDING)["data"]
    del data["taskId"]
    assert wire.structure_details(data, "asked").task_id == "asked"


def test_details_param_invalid_json_kept_raw() -> None:
    data = json.loads(RI_PENDING)["data"]
    data["param"] = '{"title": "Salt Road", '
    assert wire.structure_details(data, "t").param == '{"title": "Salt Road", '


def test_details_param_already_an_object_kept() -> None:
    data = json.loads(RI_PENDING)["data"]
    data["param"] = {"title": "Salt Road"}
    assert wire.structure_details(data, "t").param == {"title": "Salt Road"}


@pytest.mark.parametrize("status", ["QUEUED", "", "success", "TEXT_PROCESSING"])
def test_details_unknown_status_has_no_stage(status: str) -> None:
    data = json.loads(RI_PENDING)["data"]
    data["status"] = status
    info = wire.structure_details(data, "t")
    assert info.status == status
    assert info.stage is None
    assert not info.is_terminal


@pytest.mark.parametrize(
    ("status", "stage"),
    [
        ("PENDING", Stage.PENDING),
        ("GENERATING", Stage.PENDING),
        ("TEXT_SUCCESS", Stage.TEXT),
        ("FIRST_SUCCESS", Stage.FIRST),
        ("SUCCESS", Stage.COMPLETE),
        ("CREATE_TASK_FAILED", Stage.FAILED),
        ("GENERATE_AUDIO_FAILED", Stage.FAILED),
        ("SENSITIVE_WORD_ERROR", Stage.FAILED),
        ("FAILED", Stage.FAILED),
    ],
)
def test_details_status_to_stage(status: str, stage: Stage) -> None:
    info = TaskDetails(task_id="t", status=status)
    assert info.stage is stage
    assert info.is_terminal == (stage in (Stage.COMPLETE, Stage.FAILED))


def test_details_unknown_fields_kept() -> None:
    data = json.loads(RI_PENDING)["data"]
    data["progress"] = 0.4
    data["operationType"] = "add_vocals"
    info = wire.structure_details(data, "t")
    assert info.extra == {"progress": 0.4}
    assert info.operation_type == "add_vocals"


def test_callback_exception_complete_when_tracks_finished() -> None:
    data = json.loads(RI_SUCCESS)["data"]
    data["status"] = "CALLBACK_EXCEPTION"
    info = wire.structure_details(data, TASK)
    assert info.stage is Stage.COMPLETE
    assert info.is_terminal


def test_callback_exception_failed_without_tracks() -> None:
    data = json.loads(RI_PENDING)["data"]
    data["status"] = "CALLBACK_EXCEPTION"
    info = wire.structure_details(data, "t")
    assert info.stage is Stage.FAILED
    assert info.is_terminal


def test_callback_exception_failed_with_a_partial_track() -> None:
    data = json.loads(RI_SUCCESS)["data"]
    data["status"] = "CALLBACK_EXCEPTION"
    data["response"]["sunoData"][1]["audioUrl"] = ""
    assert wire.structure_details(data, TASK).stage is Stage.FAILED


# ---------------------------------------------------------------- hypothesis: round trips


def test_extra_key_filter_rejects_both_spellings() -> None:
    for key in ("audio_url", "audioUrl", "createTime", "create_time", "modelName", "id"):
        assert not not_a_track_field(key)
    assert not_a_track_field("lyricsAligned")


@given(TRACKS)
@settings(max_examples=200)
def test_track_round_trip(track: Track) -> None:
    out = wire.unstructure_track(track)
    assert wire.structure_track(out) == track
    # and through JSON text, as a callback would carry it
    assert wire.structure_track(json.loads(json.dumps(out))) == track


@given(TRACKS)
@settings(max_examples=50)
def test_track_round_trip_through_camel_case(track: Track) -> None:
    out = wire.unstructure_track(track)
    camel = {(camel_case(k) if k in FIELD_NAMES else k): v for k, v in out.items()}
    assert wire.structure_track(camel) == track


@given(EVENTS)
@settings(max_examples=150)
def test_callback_round_trip(event: CallbackEvent) -> None:
    body = wire.unstructure_callback(event)
    assert body["data"]["task_id"] == event.task_id
    assert body["data"]["callbackType"] == event.callback_type
    assert wire.structure_callback(body) == event
    assert wire.structure_callback(json.loads(json.dumps(body))) == event


# ---------------------------------------------------------------- hypothesis: never crash


# Well formed up to the tracks, hostile inside them.


@given(ANY_JSON | CALLBACKISH | WELL_FORMED_CALLBACK)
@settings(max_examples=300)
def test_structure_callback_raises_only_parse_error(body: Any) -> None:
    try:
        event = wire.structure_callback(body)
    except CallbackParseError:
        return
    assert isinstance(event, CallbackEvent)
    assert isinstance(event.task_id, str)
    assert event.task_id
    assert isinstance(event.code, int)
    assert all(isinstance(t, Track) for t in event.tracks)
    assert event.stage is None or isinstance(event.stage, Stage)


@given(ANY_JSON | DETAILSISH | WELL_FORMED_DETAILS)
@settings(max_examples=300)
def test_structure_details_never_raises(data: Any) -> None:
    info = wire.structure_details(data, "fallback")
    assert isinstance(info, TaskDetails)
    assert isinstance(info.task_id, str)
    assert info.task_id
    assert isinstance(info.status, str)
    assert info.error_code is None or isinstance(info.error_code, int)
    assert all(isinstance(t, Track) for t in info.tracks)
    assert info.stage is None or isinstance(info.stage, Stage)


@given(ANY_JSON)
@settings(max_examples=200)
def test_parse_create_time_never_raises(value: Any) -> None:
    parsed = parse_create_time(value)
    assert parsed is None or parsed.tzinfo is not None


def test_a_filled_spelling_beats_an_empty_one_and_the_other_is_kept() -> None:
    track = wire.structure_track({"audioUrl": None, "audio_url": "https://f.example.org/x.mp3"})
    assert track.audio_url == "https://f.example.org/x.mp3"
    assert track.extra == {"audioUrl": None}
    first = wire.structure_track({"audio_url": "https://a", "audioUrl": "https://b"})
    assert first.audio_url == "https://a"
    assert first.extra == {"audioUrl": "https://b"}


# ---------------- memory an attacker could pin


def test_a_callback_keeps_at_most_a_few_tracks() -> None:
    body = callback(TASK)
    body["data"]["data"] = [{}] * 10_000
    event = wire.structure_callback(body)
    assert len(event.tracks) == MAX_TRACKS


def test_nested_values_read_as_empty_text_and_never_break_a_read() -> None:
    nested: Any = []
    for _ in range(50_000):
        nested = [nested]
    event = wire.structure_callback(callback(TASK, title=None))
    assert event.task_id == TASK
    track = wire.structure_track({"id": "t", "title": nested, "prompt": {"a": 1}})
    assert (track.title, track.prompt) == ("", "")
    details = wire.structure_details({"taskId": TASK, "param": "[" * 100_000}, TASK)
    assert details.param == "[" * 100_000  # kept as the raw text
