"""What differs between the three resellers of the API, and the pure decisions built on it.

Everything provider-specific lives here: base URLs, the code → error class maps (429 means
"out of credits" on apibox/sunoapi but "rate limited" on kie), the credits path, the model
enum and default, length limits, callback failure wording and signing, and the file-upload
host with its routes and retention (sunoapi and kie; api.box documents none). The retry decisions
are pure functions over these tables, tested without a network.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attr  # attrs under its first name: aiohttp imports it, the `attrs` alias costs ~0.5 ms

from ._errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    InsufficientCreditsError,
    InvalidParametersError,
    MaintenanceError,
    NotFoundError,
    PromptTooLongError,
    RateLimitError,
    RequestValidationError,
    ServerError,
)

__all__ = [
    "PROVIDERS",
    "UPLOAD_CODES",
    "Field",
    "LengthLimits",
    "Outcome",
    "ProviderProfile",
    "classify_get",
    "classify_submit",
    "error_class_for",
    "get_provider",
    "make_api_error",
    "retry_outcome",
]

KNOWN_MODELS: tuple[str, ...] = (
    "V4",
    "V4_5",
    "V4_5ALL",
    "V4_5PLUS",
    "V5",
    "V5_5",
    "V6",
    "V6_WILD",
    "V6_MINI",
)


class Field(str, enum.Enum):
    """The length-limited text fields of a request."""

    PROMPT = "prompt"  # also lyrics
    STYLE = "style"
    TITLE = "title"
    NEGATIVE_TAGS = "negative_tags"


@attr.frozen
class LengthLimits:
    """Maximum lengths (``len(str)``) of the text fields, one row per model.

    Where each default comes from (the add-vocals pages state few of them):

    - ``prompt`` (and ``lyrics``) 5000: the add-vocals page of the V6 family; 3000 for
      V4 from the generate endpoint's page.
    - ``style`` 1000 (200 for V4): the generate, upload-cover and upload-extend pages.
    - ``title`` 100: sunoapi's add-vocals page; 80 for V4 and V4_5ALL from the generate
      page, and 80 for every model on kie's newer generate page (``title_cap``).
    - ``negative_tags`` 200: the generate and add-instrumental pages.

    They are defaults, not the API's word for this endpoint: lift or lower them with
    ``AddVocalsClient(length_limits=LengthLimits(...))`` or a ``ProviderProfile`` with
    ``length_limits=``.
    """

    prompt: int = 5000
    style: int = 1000
    title: int = 100
    negative_tags: int = 200

    def limit(self, field: str) -> int:
        """The limit of ``field`` (a ``Field`` or its name, e.g. ``"title"``)."""
        return int(getattr(self, str(Field(field).value)))


_DEFAULT_LIMITS = LengthLimits()
_LIMITS_BY_MODEL: Mapping[str | None, LengthLimits] = {
    "V4": LengthLimits(prompt=3000, style=200, title=80),
    "V4_5ALL": LengthLimits(title=80),
}


def limits_for(model: str | None, *, title_cap: int | None = None) -> LengthLimits:
    """The length limits for ``model``. The add-vocals pages state only ``title`` ≤ 100
    (sunoapi) and ``prompt``/``lyrics`` ≤ 5000 (V6 family); the rest comes from the
    sibling endpoints (generate, upload-cover, upload-extend, add-instrumental). Unknown
    and omitted models get the row shared by V4_5 and later models."""
    limits = _LIMITS_BY_MODEL.get(model, _DEFAULT_LIMITS)
    if title_cap is not None and title_cap < limits.title:
        limits = attr.evolve(limits, title=title_cap)
    return limits


_COMMON_CODES: Mapping[int, type[APIError]] = {
    401: AuthenticationError,
    404: NotFoundError,
    455: MaintenanceError,
    500: ServerError,
}

_APIBOX_CODES: Mapping[int, type[APIError]] = {
    **_COMMON_CODES,
    400: InvalidParametersError,
    405: RateLimitError,
    413: PromptTooLongError,
    429: InsufficientCreditsError,
    430: RateLimitError,
}

_KIE_CODES: Mapping[int, type[APIError]] = {
    **_COMMON_CODES,
    402: InsufficientCreditsError,
    422: InvalidParametersError,
    429: RateLimitError,
    501: ServerError,
    505: ServerError,
}

UPLOAD_CODES: Mapping[int, type[APIError]] = {
    400: InvalidParametersError,
    401: AuthenticationError,
    405: RateLimitError,
    500: ServerError,
}
"""The upload hosts' codes (API-SPEC §7: 400, 401, 405, 500), the same on sunoapi and kie."""

_DAY = 86_400.0

_APIBOX_CALLBACK_CODES: Mapping[int, str] = {
    400: "bad request: invalid parameters or a content-policy violation",
    451: "the input audio could not be downloaded",
    500: "server error, try again later",
}

_KIE_CALLBACK_CODES: Mapping[int, str] = {
    400: "the lyrics contain copyrighted material",
    408: "the task timed out",
    413: "the audio matches an existing work",
    500: "server error",
    501: "audio generation failed",
    531: "generation failed; the credits were refunded, you may retry",
}


@attr.frozen
class ProviderProfile:
    """One reseller's wire differences. Pass a modified copy (``attrs.evolve``) as
    ``provider=`` to adapt to a change before this library catches up."""

    name: str
    base_url: str
    credits_path: str
    codes: Mapping[int, type[APIError]]
    callback_codes: Mapping[int, str]
    default_model: str
    models: tuple[str, ...] = KNOWN_MODELS
    title_cap: int | None = None
    signs_callbacks: bool = False
    length_limits: LengthLimits | None = None
    """Replaces the per-model rows (and ``title_cap``) for every model when set."""
    submit_path: str = "/api/v1/generate/add-vocals"
    details_path: str = "/api/v1/generate/record-info"
    upload_base_url: str | None = None
    """The provider's file-upload host; ``None`` where it documents no upload API."""
    upload_retention: float | None = None
    """Seconds an uploaded file stays fetchable (sunoapi 3 days, kie 24 hours)."""
    upload_stream_path: str = "/api/file-stream-upload"
    upload_base64_path: str = "/api/file-base64-upload"
    upload_url_path: str = "/api/file-url-upload"

    @property
    def can_upload(self) -> bool:
        """Whether the provider has a file-upload API."""
        return self.upload_base_url is not None

    def limits(self, model: str | None) -> LengthLimits:
        if self.length_limits is not None:
            return self.length_limits
        return limits_for(model, title_cap=self.title_cap)

    def describe_callback_code(self, code: int | None) -> str | None:
        """A person's reading of a failed-callback code, or None when undocumented."""
        return None if code is None else self.callback_codes.get(code)

    def __repr__(self) -> str:
        return f"ProviderProfile(name={self.name!r}, base_url={self.base_url!r})"


PROVIDERS: Mapping[str, ProviderProfile] = {
    "apibox": ProviderProfile(
        name="apibox",
        base_url="https://api.api.box",
        credits_path="/api/v1/generate/credit",
        codes=_APIBOX_CODES,
        callback_codes=_APIBOX_CALLBACK_CODES,
        default_model="V6",
    ),
    "sunoapi": ProviderProfile(
        name="sunoapi",
        base_url="https://api.sunoapi.org",
        credits_path="/api/v1/generate/credit",
        codes=_APIBOX_CODES,
        callback_codes=_APIBOX_CALLBACK_CODES,
        default_model="V4_5PLUS",
        upload_base_url="https://sunoapiorg.redpandaai.co",
        upload_retention=3 * _DAY,
    ),
    "kie": ProviderProfile(
        name="kie",
        base_url="https://api.kie.ai",
        credits_path="/api/v1/chat/credit",
        codes=_KIE_CODES,
        callback_codes=_KIE_CALLBACK_CODES,
        default_model="V4_5PLUS",
        title_cap=80,
        signs_callbacks=True,
        upload_base_url="https://kieai.redpandaai.co",
        upload_retention=1 * _DAY,  # kie's current page; older ones said 3 days
    ),
}


def get_provider(provider: str | ProviderProfile) -> ProviderProfile:
    """The profile named ``provider`` (``"apibox"``, ``"sunoapi"``, ``"kie"``), or the
    profile itself when one is passed."""
    if isinstance(provider, ProviderProfile):
        return provider
    try:
        return PROVIDERS[provider]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise RequestValidationError(
            "provider", provider, f"unknown provider; expected one of: {known}"
        ) from None


def error_class_for(profile: ProviderProfile, code: int) -> type[APIError]:
    """The error class for a non-success ``code``: the provider's table first, then
    ``ServerError`` for any 5xx and plain ``APIError`` for the rest."""
    cls = profile.codes.get(code)
    if cls is not None:
        return cls
    return ServerError if 500 <= code <= 599 else APIError


def make_api_error(
    profile: ProviderProfile,
    code: int,
    msg: str,
    *,
    http_status: int | None,
    from_envelope: bool = True,
    task_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """The error for an answer. Without a JSON envelope the HTTP status stands in for the
    code: a bare 429 is a gateway's rate limit whatever the provider, and a bare 405 is a
    proxy's "method not allowed", not the API's rate limit."""
    cls = error_class_for(profile, code)
    if not from_envelope:
        # A page from a proxy or gateway, not the API: only a real 429 is a rate limit.
        # The API's own codes (405 and 430 rate limits, 429 credits on apibox, 455
        # maintenance, 413 too long) mean what they mean only inside its envelope.
        if code == 429:
            cls = RateLimitError
        elif cls in (
            RateLimitError,
            InsufficientCreditsError,
            MaintenanceError,
            PromptTooLongError,
        ):
            cls = APIError
    return cls(code, msg, http_status=http_status, task_id=task_id, retry_after=retry_after)


class Outcome(enum.Enum):
    """What an answer to a request means for retrying it."""

    RETRY = "retry"  # surely not acted on: back off and send again
    FAIL = "fail"  # surely not acted on, and sending again will not help
    AMBIGUOUS = "ambiguous"  # a submit may have created a task: never resend


def classify_submit(profile: ProviderProfile, error: APIError) -> Outcome:
    """Decide whether a failed submit may be sent again without paying twice: an error
    envelope carries no ``taskId``, so a documented rejection code left nothing behind;
    a 5xx may have created the task, so it is never resent."""
    if isinstance(error, (RateLimitError, MaintenanceError)):
        return Outcome.RETRY
    if profile.name == "kie" and error.code == 505:
        return Outcome.FAIL  # feature disabled: nothing created (inferred), retrying won't help
    if isinstance(error, ServerError):
        return Outcome.AMBIGUOUS
    return Outcome.FAIL


def classify_get(error: APIError) -> Outcome:
    """Decide whether a failed read (details, credits) is worth sending again. Reads are
    idempotent, so every transient answer is retried."""
    if isinstance(error, (RateLimitError, MaintenanceError, ServerError)):
        return Outcome.RETRY
    return Outcome.FAIL


def retry_outcome(profile: ProviderProfile, error: BaseException, *, submit: bool) -> Outcome:
    """The one retry decision for any failure of a request. A submit is resent only where
    the API surely did not create a task; a read (details, credits) on anything transient."""
    if isinstance(error, APIError):
        return classify_submit(profile, error) if submit else classify_get(error)
    if isinstance(error, APIConnectionError):
        if not submit:
            return Outcome.RETRY
        return Outcome.AMBIGUOUS if error.maybe_submitted else Outcome.RETRY
    return Outcome.FAIL
