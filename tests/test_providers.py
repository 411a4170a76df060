"""Provider profiles, the code → error maps (API-SPEC §3.2, §3.3) and the pure retry
decisions (§3.1): a submit is resent only where the API surely created nothing."""

from __future__ import annotations

import attrs
import pytest

from addvocals_async import (
    PROVIDERS,
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    InsufficientCreditsError,
    InvalidParametersError,
    MaintenanceError,
    NotFoundError,
    PromptTooLongError,
    ProviderProfile,
    RateLimitError,
    ServerError,
)
from addvocals_async._providers import (
    KNOWN_MODELS,
    Field,
    LengthLimits,
    Outcome,
    classify_get,
    classify_submit,
    error_class_for,
    get_provider,
    limits_for,
    make_api_error,
    retry_outcome,
)

APIBOX_TABLE: dict[int, type[APIError]] = {  # §3.2, apibox and sunoapi
    400: InvalidParametersError,
    401: AuthenticationError,
    404: NotFoundError,
    405: RateLimitError,
    413: PromptTooLongError,
    429: InsufficientCreditsError,
    430: RateLimitError,
    455: MaintenanceError,
    500: ServerError,
}
KIE_TABLE: dict[int, type[APIError]] = {  # §3.3
    401: AuthenticationError,
    402: InsufficientCreditsError,
    404: NotFoundError,
    409: APIError,
    422: InvalidParametersError,
    429: RateLimitError,
    451: APIError,
    455: MaintenanceError,
    500: ServerError,
    501: ServerError,
    505: ServerError,
}
TABLES = {"apibox": APIBOX_TABLE, "sunoapi": APIBOX_TABLE, "kie": KIE_TABLE}
ALL = ("apibox", "sunoapi", "kie")

CASES = [(name, code, cls) for name, table in TABLES.items() for code, cls in table.items()]


def err(provider: str, code: int, *, from_envelope: bool = True) -> APIError:
    return make_api_error(
        get_provider(provider), code, "m", http_status=200, from_envelope=from_envelope
    )


# ---------------------------------------------------------------- profiles


def test_three_providers() -> None:
    assert set(PROVIDERS) == set(ALL)


@pytest.mark.parametrize(
    ("name", "base_url", "credits_path", "default_model", "signs"),
    [
        ("apibox", "https://api.api.box", "/api/v1/generate/credit", "V6", False),
        ("sunoapi", "https://api.sunoapi.org", "/api/v1/generate/credit", "V4_5PLUS", False),
        ("kie", "https://api.kie.ai", "/api/v1/chat/credit", "V4_5PLUS", True),
    ],
)
def test_profile_values(
    name: str, base_url: str, credits_path: str, default_model: str, signs: bool
) -> None:
    profile = get_provider(name)
    assert profile.name == name
    assert profile.base_url == base_url
    assert profile.credits_path == credits_path
    assert profile.default_model == default_model
    assert profile.default_model in profile.models
    assert profile.signs_callbacks is signs
    assert profile.submit_path == "/api/v1/generate/add-vocals"
    assert profile.details_path == "/api/v1/generate/record-info"


def test_get_provider_returns_a_profile_unchanged() -> None:
    custom = attrs.evolve(PROVIDERS["kie"], base_url="http://127.0.0.1:9999")
    assert get_provider(custom) is custom


@pytest.mark.parametrize("name", ["", "APIBOX", "api.box", "suno", "kie.ai", "openai"])
def test_get_provider_unknown_name(name: str) -> None:
    with pytest.raises(ValueError, match="unknown provider") as info:
        get_provider(name)
    for known in ALL:
        assert known in str(info.value)


def test_profile_repr_is_short() -> None:
    text = repr(PROVIDERS["kie"])
    assert "kie" in text
    assert "https://api.kie.ai" in text
    assert "InsufficientCredits" not in text


def test_describe_callback_code() -> None:
    apibox, kie = PROVIDERS["apibox"], PROVIDERS["kie"]
    assert apibox.describe_callback_code(451) is not None
    assert kie.describe_callback_code(531) is not None
    assert "refunded" in (kie.describe_callback_code(531) or "")
    assert apibox.describe_callback_code(531) is None  # kie only
    assert kie.describe_callback_code(451) is None  # apibox/sunoapi only
    assert kie.describe_callback_code(None) is None
    # kie's callback 413 is not about length
    assert "long" not in (kie.describe_callback_code(413) or "")


# ---------------------------------------------------------------- code → class


@pytest.mark.parametrize(("provider", "code", "cls"), CASES)
def test_documented_codes_map_to_spec_class(provider: str, code: int, cls: type[APIError]) -> None:
    assert error_class_for(get_provider(provider), code) is cls
    error = err(provider, code)
    assert type(error) is cls
    assert error.code == code
    assert error.msg == "m"
    assert error.http_status == 200


def test_429_differs_by_provider() -> None:
    assert type(err("apibox", 429)) is InsufficientCreditsError
    assert type(err("sunoapi", 429)) is InsufficientCreditsError
    assert type(err("kie", 429)) is RateLimitError


def test_credits_codes() -> None:
    assert type(err("kie", 402)) is InsufficientCreditsError
    assert type(err("apibox", 402)) is APIError  # unlisted there


def test_413_is_prompt_too_long_only_on_apibox_sunoapi() -> None:
    assert type(err("apibox", 413)) is PromptTooLongError
    assert type(err("sunoapi", 413)) is PromptTooLongError
    assert type(err("kie", 413)) is APIError


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("code", [403, 406, 408, 410, 418, 499, 300, 302, 100, 0, -1, 600, 999])
def test_unlisted_non_5xx_codes_are_plain_api_error(provider: str, code: int) -> None:
    assert code not in TABLES[provider]
    assert type(err(provider, code)) is APIError


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("code", [502, 503, 504, 520, 599])
def test_unlisted_5xx_codes_are_server_error(provider: str, code: int) -> None:
    error = err(provider, code)
    assert type(error) is ServerError
    assert error.code == code


def test_unlisted_codes_differ_by_provider() -> None:
    # each provider's table, not the other's
    assert type(err("kie", 400)) is APIError
    assert type(err("kie", 405)) is APIError
    assert type(err("kie", 430)) is APIError
    assert type(err("apibox", 422)) is APIError
    assert type(err("apibox", 409)) is APIError
    assert type(err("apibox", 501)) is ServerError  # any 5xx


@pytest.mark.parametrize("provider", ALL)
def test_bare_429_without_envelope_is_rate_limit(provider: str) -> None:
    error = make_api_error(
        get_provider(provider), 429, "Too Many Requests", http_status=429, from_envelope=False
    )
    assert type(error) is RateLimitError
    assert error.code == 429
    assert error.http_status == 429
    assert classify_submit(get_provider(provider), error) is Outcome.RETRY


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("status", [405, 413, 430, 455, 402])
def test_bare_api_codes_without_envelope_are_a_proxys_page(provider: str, status: int) -> None:
    """A proxy's "405 Method Not Allowed" page is not the API's rate limit: retrying it
    five times only delays a configuration error. Only the envelope's codes mean that."""
    profile = get_provider(provider)
    error = make_api_error(profile, status, "Not Allowed", http_status=status, from_envelope=False)
    assert type(error) is APIError
    assert classify_submit(profile, error) is Outcome.FAIL
    assert classify_get(error) is Outcome.FAIL


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_bare_5xx_without_envelope_is_ambiguous(provider: str, status: int) -> None:
    profile = get_provider(provider)
    error = make_api_error(profile, status, "Bad Gateway", http_status=status, from_envelope=False)
    assert isinstance(error, ServerError)
    assert classify_submit(profile, error) is Outcome.AMBIGUOUS


def test_make_api_error_keeps_task_id_and_retry_after() -> None:
    error = make_api_error(
        PROVIDERS["kie"], 429, "slow down", http_status=200, task_id="abc", retry_after=2.5
    )
    assert error.task_id == "abc"
    assert error.retry_after == 2.5
    assert error.msg == "slow down"


def test_custom_profile_code_table_wins() -> None:
    custom = attrs.evolve(
        PROVIDERS["apibox"], codes={**PROVIDERS["apibox"].codes, 418: RateLimitError}
    )
    assert error_class_for(custom, 418) is RateLimitError
    assert error_class_for(PROVIDERS["apibox"], 418) is APIError


# ---------------------------------------------------------------- classify_submit

RETRY_SUBMIT = [("apibox", 405), ("apibox", 430), ("apibox", 455), ("sunoapi", 405)]
RETRY_SUBMIT += [("sunoapi", 430), ("sunoapi", 455), ("kie", 429), ("kie", 455)]
AMBIGUOUS_SUBMIT = [(p, c) for p in ALL for c in (500, 502, 503, 599)]
AMBIGUOUS_SUBMIT += [("kie", 501), ("apibox", 501), ("sunoapi", 501), ("apibox", 505)]
FAIL_SUBMIT = [
    ("apibox", 400),
    ("apibox", 401),
    ("apibox", 404),
    ("apibox", 413),
    ("apibox", 429),  # credits, not rate
    ("sunoapi", 400),
    ("sunoapi", 401),
    ("sunoapi", 404),
    ("sunoapi", 413),
    ("sunoapi", 429),
    ("kie", 401),
    ("kie", 402),
    ("kie", 404),
    ("kie", 409),
    ("kie", 422),
    ("kie", 451),
    ("kie", 505),  # feature disabled: nothing created, retrying won't help
    ("apibox", 418),
]


@pytest.mark.parametrize(("provider", "code"), RETRY_SUBMIT)
def test_submit_retry(provider: str, code: int) -> None:
    assert classify_submit(get_provider(provider), err(provider, code)) is Outcome.RETRY


@pytest.mark.parametrize(("provider", "code"), AMBIGUOUS_SUBMIT)
def test_submit_ambiguous(provider: str, code: int) -> None:
    assert classify_submit(get_provider(provider), err(provider, code)) is Outcome.AMBIGUOUS


@pytest.mark.parametrize(("provider", "code"), FAIL_SUBMIT)
def test_submit_fail(provider: str, code: int) -> None:
    assert classify_submit(get_provider(provider), err(provider, code)) is Outcome.FAIL


def test_every_documented_code_has_a_submit_decision() -> None:
    decided = {(p, c) for p, c in RETRY_SUBMIT + AMBIGUOUS_SUBMIT + FAIL_SUBMIT}
    for provider, code, _ in CASES:
        assert (provider, code) in decided, (provider, code)


# ---------------------------------------------------------------- classify_get


@pytest.mark.parametrize(
    ("provider", "code"),
    [(p, c) for p in ALL for c in (455, 500, 502, 503, 504)]
    + [("apibox", 405), ("apibox", 430), ("sunoapi", 405), ("sunoapi", 430), ("kie", 429)]
    + [("kie", 501), ("kie", 505)],
)
def test_get_retries_transient_answers(provider: str, code: int) -> None:
    assert classify_get(err(provider, code)) is Outcome.RETRY


@pytest.mark.parametrize(("provider"), ALL)
def test_get_retries_bare_429(provider: str) -> None:
    assert classify_get(err(provider, 429, from_envelope=False)) is Outcome.RETRY


@pytest.mark.parametrize(
    ("provider", "code"),
    [(p, c) for p in ("apibox", "sunoapi") for c in (400, 401, 404, 413, 429)]
    + [("kie", c) for c in (401, 402, 404, 409, 422, 451)]
    + [("apibox", 418)],
)
def test_get_fails_on_the_rest(provider: str, code: int) -> None:
    assert classify_get(err(provider, code)) is Outcome.FAIL


# ---------------------------------------------------------------- length limits


def test_limits_for_models() -> None:
    assert limits_for("V4") == LengthLimits(prompt=3000, style=200, title=80, negative_tags=200)
    assert limits_for("V4_5ALL") == LengthLimits(
        prompt=5000, style=1000, title=80, negative_tags=200
    )
    common = LengthLimits(prompt=5000, style=1000, title=100, negative_tags=200)
    for model in [None, "V7", *(m for m in KNOWN_MODELS if m not in ("V4", "V4_5ALL"))]:
        assert limits_for(model) == common, model


def test_limit_lookup_by_field() -> None:
    limits = limits_for("V4")
    assert limits.limit(Field.PROMPT) == 3000
    assert limits.limit(Field.STYLE) == 200
    assert limits.limit(Field.TITLE) == 80
    assert limits.limit(Field.NEGATIVE_TAGS) == 200


def test_title_cap_only_lowers() -> None:
    assert limits_for("V5", title_cap=80).title == 80
    assert limits_for("V4", title_cap=90).title == 80
    assert limits_for("V5", title_cap=None).title == 100


@pytest.mark.parametrize("model", [None, "V4", "V4_5ALL", "V5", "V6"])
def test_kie_caps_title_at_80_for_every_model(model: str | None) -> None:
    assert PROVIDERS["kie"].limits(model).title == 80
    assert PROVIDERS["kie"].limits(model).prompt == limits_for(model).prompt


def test_apibox_and_sunoapi_use_the_model_rows() -> None:
    for name in ("apibox", "sunoapi"):
        assert PROVIDERS[name].limits("V5").title == 100
        assert PROVIDERS[name].limits("V4").title == 80


def test_profile_is_a_profile() -> None:
    assert all(isinstance(p, ProviderProfile) for p in PROVIDERS.values())


# ---------------------------------------------------------------- retry_outcome


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("code", [400, 401, 402, 404, 405, 413, 422, 429, 430, 455, 500, 501, 505])
def test_retry_outcome_for_api_errors_follows_classify(provider: str, code: int) -> None:
    profile = get_provider(provider)
    error = err(provider, code)
    assert retry_outcome(profile, error, submit=True) is classify_submit(profile, error)
    assert retry_outcome(profile, error, submit=False) is classify_get(error)


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("cls", [APIConnectionError, APITimeoutError])
def test_retry_outcome_for_connection_errors(provider: str, cls: type[APIConnectionError]) -> None:
    profile = get_provider(provider)
    never_sent = cls("connection refused", maybe_submitted=False)
    maybe_sent = cls("reset after sending", maybe_submitted=True)
    assert retry_outcome(profile, never_sent, submit=True) is Outcome.RETRY
    assert retry_outcome(profile, maybe_sent, submit=True) is Outcome.AMBIGUOUS
    # reads are idempotent: always worth another try
    assert retry_outcome(profile, never_sent, submit=False) is Outcome.RETRY
    assert retry_outcome(profile, maybe_sent, submit=False) is Outcome.RETRY


@pytest.mark.parametrize("submit", [True, False])
@pytest.mark.parametrize("error", [ValueError("x"), KeyError("k"), RuntimeError("boom")])
def test_retry_outcome_for_anything_else_is_fail(error: BaseException, submit: bool) -> None:
    assert retry_outcome(PROVIDERS["apibox"], error, submit=submit) is Outcome.FAIL
