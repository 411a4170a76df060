"""The error tree of DESIGN.md and what each error says about itself."""

from __future__ import annotations

import pytest

import addvocals_async
from addvocals_async import (
    AddVocalsError,
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    InsufficientCreditsError,
    InvalidParametersError,
    MaintenanceError,
    NotFoundError,
    PromptTooLongError,
    RateLimitError,
    ReceiverClosedError,
    RequestValidationError,
    ServerError,
    TaskFailedError,
    TaskTimeoutError,
    WebhookVerificationError,
)
from addvocals_async._providers import PROVIDERS, make_api_error

SECRET = "sk-live-0123456789abcdef-DO-NOT-LOG"

# (class, direct parent, extra bases)
TREE: list[tuple[type[BaseException], type[BaseException], tuple[type[BaseException], ...]]] = [
    (AddVocalsError, Exception, ()),
    (RequestValidationError, AddVocalsError, (ValueError,)),
    (APIError, AddVocalsError, ()),
    (InvalidParametersError, APIError, ()),
    (AuthenticationError, APIError, ()),
    (NotFoundError, APIError, ()),
    (RateLimitError, APIError, ()),
    (PromptTooLongError, APIError, ()),
    (InsufficientCreditsError, APIError, ()),
    (MaintenanceError, APIError, ()),
    (ServerError, APIError, ()),
    (APIConnectionError, AddVocalsError, ()),
    (APITimeoutError, APIConnectionError, ()),
    (TaskFailedError, AddVocalsError, ()),
    (TaskTimeoutError, AddVocalsError, (TimeoutError,)),
    (WebhookVerificationError, AddVocalsError, (ValueError,)),
    (ReceiverClosedError, AddVocalsError, ()),
]
API_SUBCLASSES = [cls for cls, parent, _ in TREE if parent is APIError]


@pytest.mark.parametrize(("cls", "parent", "also"), TREE)
def test_tree(
    cls: type[BaseException], parent: type[BaseException], also: tuple[type[BaseException], ...]
) -> None:
    assert issubclass(cls, parent)
    assert issubclass(cls, AddVocalsError)
    for base in also:
        assert issubclass(cls, base)
    assert getattr(addvocals_async, cls.__name__) is cls


def test_siblings_do_not_overlap() -> None:
    for a in API_SUBCLASSES:
        for b in API_SUBCLASSES:
            assert (a is b) == issubclass(a, b), (a, b)
    assert not issubclass(APIError, ValueError)
    assert not issubclass(APIConnectionError, APIError)
    assert not issubclass(TaskTimeoutError, APIConnectionError)
    assert not issubclass(TaskFailedError, APIError)


def test_only_the_documented_ones_are_value_errors() -> None:
    value_errors = {cls for cls, _, _ in TREE if issubclass(cls, ValueError)}
    assert value_errors == {RequestValidationError, WebhookVerificationError}


def test_timeout_errors() -> None:
    timeouts = {cls for cls, _, _ in TREE if issubclass(cls, TimeoutError)}
    assert timeouts == {TaskTimeoutError}


# ---------------------------------------------------------------- APIError


def test_api_error_attributes_and_message() -> None:
    error = APIError(430, "Request frequency too high", http_status=200, task_id="abc123")
    assert error.code == 430
    assert error.msg == "Request frequency too high"
    assert error.http_status == 200
    assert error.task_id == "abc123"
    assert error.retry_after is None
    text = str(error)
    assert "430" in text
    assert "HTTP" not in text  # an envelope error inside HTTP 200 is the normal case
    assert "abc123" in text
    assert "Request frequency too high" in text
    assert "HTTP 503" in str(APIError(455, "Maintenance", http_status=503))


def test_the_task_id_shows_even_when_set_after_the_error_was_made() -> None:
    error = APIError(404, "Task not found", http_status=200)
    error.task_id = "4d8e0f3a91b27c65e0a4f1d9b3c87e52"
    assert str(error) == "API error 404 for task 4d8e0f3a91b27c65e0a4f1d9b3c87e52: Task not found"


@pytest.mark.parametrize(
    "error",
    [
        APIError(430, "slow down", http_status=200, task_id="t1", retry_after=3.0),
        RateLimitError(429, "slow down", http_status=429),
        ServerError(500, "boom", http_status=500),
        RequestValidationError("style_weight", 0.615, "must be a multiple of 0.01"),
        APIConnectionError("reset", maybe_submitted=True),
        APITimeoutError("no answer"),
        TaskFailedError(
            "t1", 531, "Failed", status="GENERATE_AUDIO_FAILED", meaning="credits refunded"
        ),
        TaskTimeoutError("t1", "complete", 9.0),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickling(error: Exception) -> None:
    """Errors cross process boundaries (worker pools, a shared delivery backend)."""
    import pickle

    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_api_error_same_http_status_not_repeated() -> None:
    text = str(APIError(502, "Bad Gateway", http_status=502))
    assert "502" in text
    assert "HTTP" not in text


def test_api_error_minimal() -> None:
    error = APIError(500, "")
    assert error.http_status is None
    assert error.task_id is None
    assert str(error) == "API error 500: no message"


@pytest.mark.parametrize("cls", API_SUBCLASSES)
def test_api_subclasses_share_the_signature(cls: type[APIError]) -> None:
    error = cls(455, "down", http_status=503, task_id="t1", retry_after=60.0)
    assert (error.code, error.msg, error.http_status, error.task_id, error.retry_after) == (
        455,
        "down",
        503,
        "t1",
        60.0,
    )
    assert "455" in str(error)
    assert "HTTP 503" in str(error)
    assert "t1" in str(error)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@pytest.mark.parametrize("code", [401, 429, 455, 500])
def test_no_secret_in_made_errors(provider: str, code: int) -> None:
    error = make_api_error(
        PROVIDERS[provider], code, "You do not have access permissions", http_status=200
    )
    for text in (str(error), repr(error), repr(error.args)):
        assert SECRET not in text
        assert "Bearer" not in text
    assert "You do not have access permissions" in str(error)
    assert str(code) in str(error)


# ---------------------------------------------------------------- the others


def test_connection_error_maybe_submitted() -> None:
    sure = APIConnectionError("connection refused")
    assert sure.maybe_submitted is False
    assert str(sure) == "connection refused"
    maybe = APIConnectionError("reset after sending", maybe_submitted=True)
    assert maybe.maybe_submitted is True
    assert "reset after sending" in str(maybe)
    assert "may have been created" in str(maybe)


def test_timeout_is_a_connection_error() -> None:
    error = APITimeoutError("no answer within 30 s", maybe_submitted=True)
    assert isinstance(error, APIConnectionError)
    assert error.maybe_submitted
    assert "30 s" in str(error)


def test_task_failed_error() -> None:
    error = TaskFailedError(
        "7e82ee581cec5cc6e587cc02409dab36",
        451,
        "Could not download the source audio",
        status="GENERATE_AUDIO_FAILED",
    )
    assert error.task_id == "7e82ee581cec5cc6e587cc02409dab36"
    assert error.code == 451
    assert error.msg == "Could not download the source audio"
    assert error.status == "GENERATE_AUDIO_FAILED"
    text = str(error)
    for part in ("7e82ee581cec5cc6e587cc02409dab36", "451", "GENERATE_AUDIO_FAILED", "download"):
        assert part in text


def test_task_failed_error_without_code_or_status() -> None:
    error = TaskFailedError("t9", None, "")
    assert error.code is None
    assert error.status is None
    assert str(error) == "task t9 failed: no message"


def test_task_timeout_error() -> None:
    error = TaskTimeoutError("t1", "complete", 900.0)
    assert (error.task_id, error.stage, error.timeout) == ("t1", "complete", 900.0)
    assert isinstance(error, TimeoutError)
    assert "t1" in str(error)
    assert "'complete'" in str(error)
    assert "900 s" in str(error)
    assert "after" not in str(TaskTimeoutError("t1", "first"))


def test_catching_timeout_error_catches_task_timeout() -> None:
    with pytest.raises(TimeoutError):
        raise TaskTimeoutError("t1", "text", 1.5)


def test_validation_error_attributes() -> None:
    error = RequestValidationError("style_weight", 0.615, "must be a multiple of 0.01")
    assert (error.field, error.value, error.rule) == (
        "style_weight",
        0.615,
        "must be a multiple of 0.01",
    )
    assert str(error) == "style_weight=0.615: must be a multiple of 0.01"


def test_validation_error_truncates_long_values() -> None:
    error = RequestValidationError("prompt", "x" * 10_000, "too long")
    text = str(error)
    assert len(text) < 120
    assert "10000 chars" in text
    assert text.endswith("too long")
    error = RequestValidationError("prompt", "x" * 78, "ok")  # repr is 80: shown whole
    assert "x" * 78 in str(error)


def test_validation_error_truncates_values_without_len() -> None:
    class Big:
        def __repr__(self) -> str:
            return "B" * 500

    text = str(RequestValidationError("model", Big(), "unknown"))
    assert len(text) < 120
    assert "?" in text


@pytest.mark.parametrize("cls", [APIError, *API_SUBCLASSES])
def test_api_error_maybe_submitted_defaults_false(cls: type[APIError]) -> None:
    assert cls(500, "x").maybe_submitted is False
