"""Client-side request validation (API-SPEC §2, §2.1, §2.2): every rule, at its boundaries.

An ``AddVocalsRequest`` is checked when it is built, so nothing invalid is ever sent.
"""

from __future__ import annotations

import decimal
import enum
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from addvocals_async import (
    AddVocalsError,
    AddVocalsRequest,
    RequestValidationError,
    UncheckedModel,
)
from addvocals_async._convert import wire
from addvocals_async._providers import KNOWN_MODELS

BASE: dict[str, Any] = {
    "upload_url": "https://cdn.example.org/stems/harbour-instrumental.wav",
    "prompt": "A warm, breathy female vocal about lanterns on a quiet harbour at night",
    "title": "Harbour Lanterns",
    "style": "Neo Soul",
    "negative_tags": "Screamo, Distorted Vocals, Autotune",
}

REQUIRED_TEXT = ("upload_url", "prompt", "title", "style", "negative_tags")
WEIGHTS = ("style_weight", "weirdness_constraint", "audio_weight")


def make(**changes: Any) -> AddVocalsRequest:
    return AddVocalsRequest(**{**BASE, **changes})


def rejected(field: str, **changes: Any) -> RequestValidationError:
    """Build a request that must fail on ``field``; return the error."""
    with pytest.raises(RequestValidationError) as info:
        make(**changes)
    assert info.value.field == field, str(info.value)
    return info.value


# ---------------------------------------------------------------- the error itself


def test_validation_error_is_value_error_and_sdk_error() -> None:
    error = rejected("style_weight", style_weight=0.615)
    assert isinstance(error, ValueError)
    assert isinstance(error, AddVocalsError)


def test_message_names_field_value_and_rule() -> None:
    error = rejected("vocal_gender", vocal_gender="x")
    assert error.value == "x"
    assert "'m' or 'f'" in error.rule
    text = str(error)
    assert "vocal_gender" in text
    assert "'x'" in text
    assert error.rule in text


def test_message_for_weight_names_the_grid() -> None:
    error = rejected("audio_weight", audio_weight=0.615)
    assert error.value == 0.615
    assert "0.615" in str(error)
    assert "0.01" in error.rule


def test_long_value_is_truncated_in_message() -> None:
    long_title = "T" * 5000
    error = rejected("title", title=long_title)
    assert error.value == long_title  # the attribute keeps the whole value
    text = str(error)
    assert len(text) < 400
    assert long_title not in text
    assert "5000 chars" in text
    assert "at most 100" in text


def test_short_value_is_shown_whole() -> None:
    error = rejected("style", style="   ")
    assert "'   '" in str(error)


# ---------------------------------------------------------------- required strings


def test_valid_base_request_builds() -> None:
    request = make()
    assert request.prompt == BASE["prompt"]
    assert request.callback_url is None


@pytest.mark.parametrize("field", REQUIRED_TEXT)
def test_missing_required_field_is_a_type_error(field: str) -> None:
    kwargs = {k: v for k, v in BASE.items() if k != field}
    with pytest.raises(TypeError, match=field):
        AddVocalsRequest(**kwargs)


@pytest.mark.parametrize("field", REQUIRED_TEXT)
@pytest.mark.parametrize("value", ["", " ", "\t\n  "])
def test_required_field_empty_or_blank(field: str, value: str) -> None:
    error = rejected(field, **{field: value})
    assert "required" in error.rule
    assert error.value == value


@pytest.mark.parametrize("field", REQUIRED_TEXT)
@pytest.mark.parametrize("value", [5, b"https://x.example/a", ["a"]])
def test_required_field_not_a_string(field: str, value: object) -> None:
    error = rejected(field, **{field: value})
    assert "string" in error.rule
    assert type(value).__name__ in error.rule


@pytest.mark.parametrize("field", REQUIRED_TEXT)
def test_required_field_none(field: str) -> None:
    error = rejected(field, **{field: None})
    assert error.value is None
    assert "required" in error.rule
    assert f"{field}=None" in str(error)


def test_lyrics_optional_but_not_blank() -> None:
    assert make(lyrics="[Verse] la la").lyrics == "[Verse] la la"
    assert make(lyrics=None).lyrics is None
    rejected("lyrics", lyrics="")
    rejected("lyrics", lyrics="   ")
    rejected("lyrics", lyrics=42)


# ---------------------------------------------------------------- URLs


@pytest.mark.parametrize("field", ["upload_url", "callback_url"])
@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example.org/a.mp3",
        "https://cdn.example.org/a.mp3",
        "https://cdn.example.org:8443/a/b.wav?sig=abc",
        "http://127.0.0.1:8080/cb/token",
        "HTTPS://CDN.EXAMPLE.ORG/A.MP3",
    ],
)
def test_absolute_http_urls_pass(field: str, url: str) -> None:
    assert getattr(make(**{field: url}), field) == url


@pytest.mark.parametrize("field", ["upload_url", "callback_url"])
@pytest.mark.parametrize(
    "url",
    [
        "/stems/a.mp3",  # relative
        "stems/a.mp3",
        "cdn.example.org/a.mp3",  # no scheme
        "//cdn.example.org/a.mp3",  # scheme-relative
        "ftp://cdn.example.org/a.mp3",
        "file:///tmp/a.mp3",
        "mailto:someone@example.org",
        "http://",  # no host
        "https:///a.mp3",
        "https://user@:80/",  # not parseable
    ],
)
def test_bad_urls_rejected(field: str, url: str) -> None:
    error = rejected(field, **{field: url})
    assert error.value == url
    assert "URL" in error.rule


@pytest.mark.parametrize("field", ["upload_url", "callback_url"])
@pytest.mark.parametrize("value", [42, b"https://cdn.example.org/a.mp3", ["https://x.org"]])
def test_url_not_a_string(field: str, value: object) -> None:
    error = rejected(field, **{field: value})
    assert "string" in error.rule


def test_callback_url_empty_is_not_the_same_as_omitted() -> None:
    rejected("callback_url", callback_url="")
    assert make(callback_url=None).callback_url is None


# ---------------------------------------------------------------- weights


@pytest.mark.parametrize("field", WEIGHTS)
@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, 0.61, 0.01, 0.99, 0.5, 0.57, 0.1 + 0.2, None])
def test_weights_on_grid_pass(field: str, value: float | None) -> None:
    assert getattr(make(**{field: value}), field) == value


@pytest.mark.parametrize("field", WEIGHTS)
@pytest.mark.parametrize(
    ("value", "rule_part"),
    [
        (0.615, "0.01"),
        (0.001, "0.01"),
        (0.999, "0.01"),
        (-0.01, "between 0 and 1"),
        (1.01, "between 0 and 1"),
        (2, "between 0 and 1"),
        (-1, "between 0 and 1"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (True, "number"),
        (False, "number"),
        ("0.5", "number"),
        ([0.5], "number"),
    ],
)
def test_weights_off_grid_or_range_fail(field: str, value: object, rule_part: str) -> None:
    error = rejected(field, **{field: value})
    assert rule_part in error.rule
    assert field in str(error)


def test_float_noise_is_not_rejected() -> None:
    # 0.1 + 0.2 == 0.30000000000000004 and 0.57 * 100 == 56.99999999999999
    assert 0.1 + 0.2 != 0.3
    assert 0.57 * 100 != 57
    make(style_weight=0.1 + 0.2, weirdness_constraint=0.57, audio_weight=0.07 * 3)


@given(st.integers(min_value=0, max_value=100), st.sampled_from(WEIGHTS))
def test_every_hundredth_passes(k: int, field: str) -> None:
    make(**{field: k / 100})
    make(**{field: k * 0.01})  # a different float for many k (0.07 vs 0.07000000000000001)


@given(
    st.integers(min_value=0, max_value=1000).filter(lambda k: k % 10 != 0),
    st.sampled_from(WEIGHTS),
)
def test_every_thousandth_off_grid_fails(k: int, field: str) -> None:
    with pytest.raises(RequestValidationError) as info:
        make(**{field: k / 1000})
    assert info.value.field == field
    assert "0.01" in info.value.rule


# ---------------------------------------------------------------- vocal_gender, variety


@pytest.mark.parametrize("value", ["m", "f", None])
def test_vocal_gender_valid(value: str | None) -> None:
    assert make(vocal_gender=value).vocal_gender == value


@pytest.mark.parametrize("value", ["M", "F", "male", "female", "", " m", "x", 1, True])
def test_vocal_gender_invalid(value: object) -> None:
    error = rejected("vocal_gender", vocal_gender=value)
    assert error.value == value


@pytest.mark.parametrize("value", [0, 1, 2, 3, 4, None])
def test_variety_valid(value: int | None) -> None:
    assert make(variety=value).variety == value


@pytest.mark.parametrize("value", [-1, 5, 100, True, False, 1.0, 2.5, "1", math.nan])
def test_variety_invalid(value: object) -> None:
    error = rejected("variety", variety=value)
    assert "0" in error.rule
    assert "4" in error.rule


# ---------------------------------------------------------------- model


@pytest.mark.parametrize("model", KNOWN_MODELS)
def test_every_known_model_passes_and_is_sent(model: str) -> None:
    body = wire.unstructure_request(make(model=model))
    assert body["model"] == model


def test_known_models_are_the_spec_union() -> None:
    assert set(KNOWN_MODELS) == {
        "V4",
        "V4_5",
        "V4_5ALL",
        "V4_5PLUS",
        "V5",
        "V5_5",
        "V6",
        "V6_WILD",
        "V6_MINI",
    }


def test_model_omitted_by_default() -> None:
    assert "model" not in wire.unstructure_request(make())


class Model(str, enum.Enum):
    V5 = "V5"
    V4 = "V4"
    V7 = "V7"


class PlainModel(enum.Enum):
    V6_WILD = "V6_WILD"


def test_str_enum_model_is_sent_as_its_value() -> None:
    request = make(model=Model.V5)
    body = wire.unstructure_request(request)
    assert body["model"] == "V5"
    assert json.loads(json.dumps(body))["model"] == "V5"
    assert type(request.model) is str


def test_plain_enum_model_is_sent_as_its_value() -> None:
    body = wire.unstructure_request(make(model=PlainModel.V6_WILD))
    assert json.loads(json.dumps(body))["model"] == "V6_WILD"


def test_enum_model_gets_that_models_limits() -> None:
    make(model=Model.V5, title="t" * 100)
    error = rejected("title", model=Model.V4, title="t" * 81)
    assert "V4" in error.rule


def test_enum_with_unknown_value_is_rejected() -> None:
    rejected("model", model=Model.V7)


@pytest.mark.parametrize("model", ["V7", "v5", "V4.5", "V4_5_PLUS", "chirp-v4-5", " V5", ""])
def test_unknown_model_rejected_naming_unchecked_model(model: str) -> None:
    error = rejected("model", model=model)
    assert error.value == model
    assert "UncheckedModel" in error.rule
    assert "V6_MINI" in error.rule  # the known values are listed


@pytest.mark.parametrize("model", [5, 4.5, True, ["V5"]])
def test_non_string_model_rejected(model: object) -> None:
    rejected("model", model=model)


def test_unchecked_model_is_accepted_and_sent_verbatim() -> None:
    request = make(model=UncheckedModel("V7"))
    assert request.model == "V7"
    body = wire.unstructure_request(request)
    assert body["model"] == "V7"
    assert json.loads(json.dumps(body))["model"] == "V7"


def test_unchecked_model_uses_the_common_length_row() -> None:
    make(model=UncheckedModel("V7"), title="t" * 100, style="s" * 1000, prompt="p" * 5000)
    rejected("title", model=UncheckedModel("V7"), title="t" * 101)


# ---------------------------------------------------------------- length limits (§2.1)

# (model, field, limit); lyrics share the prompt limit.
LIMITS: list[tuple[str | None, str, int]] = []
for _model, (_prompt, _style, _title, _neg) in {
    "V4": (3000, 200, 80, 200),
    "V4_5ALL": (5000, 1000, 80, 200),
    None: (5000, 1000, 100, 200),
    "V4_5": (5000, 1000, 100, 200),
    "V4_5PLUS": (5000, 1000, 100, 200),
    "V5": (5000, 1000, 100, 200),
    "V5_5": (5000, 1000, 100, 200),
    "V6": (5000, 1000, 100, 200),
    "V6_WILD": (5000, 1000, 100, 200),
    "V6_MINI": (5000, 1000, 100, 200),
}.items():
    LIMITS += [
        (_model, "prompt", _prompt),
        (_model, "lyrics", _prompt),
        (_model, "style", _style),
        (_model, "title", _title),
        (_model, "negative_tags", _neg),
    ]


@pytest.mark.parametrize(("model", "field", "limit"), LIMITS)
def test_length_at_limit_passes(model: str | None, field: str, limit: int) -> None:
    request = make(model=model, **{field: "x" * limit})
    assert len(getattr(request, field)) == limit


@pytest.mark.parametrize(("model", "field", "limit"), LIMITS)
def test_length_over_limit_fails(model: str | None, field: str, limit: int) -> None:
    error = rejected(field, model=model, **{field: "x" * (limit + 1)})
    assert f"at most {limit}" in error.rule
    assert f"{limit + 1} characters" in error.rule
    assert (model or "default model") in error.rule


def test_length_counts_characters_not_bytes() -> None:
    make(model="V4", title="é" * 80)  # 160 bytes in UTF-8, 80 characters
    make(title="🎵" * 100)
    rejected("title", title="🎵" * 101)


def test_v4_and_v4_5all_differ() -> None:
    make(model="V4_5ALL", prompt="p" * 5000, style="s" * 1000)
    rejected("prompt", model="V4", prompt="p" * 5000)
    rejected("style", model="V4", style="s" * 1000)
    # ...yet both cap the title at 80, the default row at 100
    rejected("title", model="V4_5ALL", title="t" * 81)
    make(model="V5", title="t" * 100)


# ---------------------------------------------------------------- the request is frozen


def test_request_is_immutable() -> None:
    request = make()
    with pytest.raises(AttributeError):
        request.style_weight = 5.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "url", [" https://cdn.example.org/a.mp3", "https://cdn.example.org/a.mp3\n"]
)
def test_urls_with_surrounding_white_space_are_refused(url: str) -> None:
    with pytest.raises(RequestValidationError, match="white space"):
        AddVocalsRequest(upload_url=url, prompt="p", title="t", style="s", negative_tags="n")


def test_an_empty_unchecked_model_is_refused() -> None:
    with pytest.raises(RequestValidationError, match="model"):
        AddVocalsRequest(
            upload_url="https://cdn.example.org/a.mp3",
            prompt="p",
            title="t",
            style="s",
            negative_tags="n",
            model=UncheckedModel(""),
        )


def test_a_decimal_weight_is_taken_and_sent_as_a_number() -> None:
    request = make(style_weight=decimal.Decimal("0.61"))
    assert wire.unstructure_request(request)["styleWeight"] == 0.61


def test_any_real_number_is_a_weight() -> None:
    """``numbers.Real`` is checked without importing ``numbers``: a Fraction, or a type
    registered as Real, is taken; a complex number or a string is not."""
    import fractions
    import numbers

    class Weight:
        def __float__(self) -> float:
            return 0.5

    numbers.Real.register(Weight)
    assert make(style_weight=fractions.Fraction(61, 100)).style_weight == fractions.Fraction(
        61, 100
    )
    assert isinstance(make(audio_weight=Weight()).audio_weight, Weight)
    rejected("style_weight", style_weight=0.5j)
    rejected("style_weight", style_weight="0.5")


@pytest.mark.parametrize("value", [10**400, -(10**400), decimal.Decimal("1e400")])
def test_a_weight_too_big_for_a_float_is_a_validation_error(value: object) -> None:
    rejected("style_weight", style_weight=value)


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.org/my beat.mp3",
        "https://cdn.example.org/a\tb.mp3",
        "https://cdn.example.org/\x7f",
    ],
)
def test_a_url_with_a_raw_space_or_control_character_is_refused(url: str) -> None:
    error = rejected("upload_url", upload_url=url)
    assert "percent-encode" in error.rule
