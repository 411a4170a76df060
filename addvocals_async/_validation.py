"""Every rule a request must meet before anything is sent, in one place.

``validate_request`` runs when an ``AddVocalsRequest`` is built: required fields, absolute
http(s) URLs, weights in [0, 1] on the 0.01 grid, the enums, and the length limits of
the model's row (the same on every provider). ``check_provider_lengths`` adds what a
provider caps lower (kie: titles at 80), once, at submit; a client or profile with
``length_limits`` of its own checks those instead (``lengths_checked_later``,
``check_lengths``). ``require_url`` is the one
"absolute http(s) URL" check of the package.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import re
import sys
from collections.abc import Iterator
from typing import Protocol

import yarl

from ._errors import RequestValidationError
from ._providers import KNOWN_MODELS, LengthLimits, ProviderProfile, limits_for

__all__ = [
    "UncheckedModel",
    "check_lengths",
    "check_provider_lengths",
    "lengths_checked_later",
    "require_text",
    "require_url",
    "validate_request",
]


class UncheckedModel(str):
    """A ``model`` value newer than this release, passed on as it is.

    ``model="V7"`` is rejected as unknown (a typo costs a credit); ``model=UncheckedModel("V7")``
    says you mean it. Length limits then follow the row shared by V4_5 and later models.
    """

    __slots__ = ()


class RequestFields(Protocol):
    """The fields of an add-vocals request that the rules read."""

    @property
    def upload_url(self) -> str: ...
    @property
    def callback_url(self) -> str | None: ...
    @property
    def prompt(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def style(self) -> str: ...
    @property
    def negative_tags(self) -> str: ...
    @property
    def lyrics(self) -> str | None: ...
    @property
    def vocal_gender(self) -> str | None: ...
    @property
    def style_weight(self) -> float | None: ...
    @property
    def weirdness_constraint(self) -> float | None: ...
    @property
    def audio_weight(self) -> float | None: ...
    @property
    def variety(self) -> int | None: ...
    @property
    def model(self) -> str | None: ...


def require_text(field: str, value: object) -> None:
    """A required, non-empty string."""
    if value is None:
        raise RequestValidationError(field, value, "is required")
    if not isinstance(value, str):
        raise RequestValidationError(field, value, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise RequestValidationError(field, value, "is required and must not be empty")


# White space as str.isspace() has it (the same Unicode table), and control characters.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def require_url(field: str, value: object) -> yarl.URL:
    """An absolute ``http://`` or ``https://`` URL with a host; returns it parsed."""
    require_text(field, value)
    assert isinstance(value, str)
    if value != value.strip():
        raise RequestValidationError(field, value, "must not start or end with white space")
    if _SPACE_OR_CONTROL.search(value) is not None:
        raise RequestValidationError(
            field, value, "must not contain spaces or control characters: percent-encode them"
        )
    try:
        url = yarl.URL(value)
    except (ValueError, TypeError):
        raise RequestValidationError(field, value, "is not a valid URL") from None
    if url.scheme not in ("http", "https") or not url.is_absolute() or not url.host:
        raise RequestValidationError(field, value, "must be an absolute http:// or https:// URL")
    return url


def _is_decimal(value: object) -> bool:
    # Not imported for this: a Decimal can exist only once its module was imported.
    decimal = sys.modules.get("decimal")
    return decimal is not None and isinstance(value, decimal.Decimal)


def _is_real(value: object) -> bool:
    """``isinstance(value, numbers.Real)``. ``numbers`` is not imported for this (at
    ``import addvocals_async``): a Real other than int and float (a ``Fraction``, a
    NumPy float) is one only once ``numbers`` was imported to register it."""
    if isinstance(value, (int, float)):
        return True
    numbers = sys.modules.get("numbers")
    return numbers is not None and isinstance(value, numbers.Real)


def _check_weight(field: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not (_is_real(value) or _is_decimal(value)):
        raise RequestValidationError(field, value, "must be a number between 0 and 1")
    try:
        x = float(value)  # type: ignore[arg-type]  # a Real or a Decimal
    except (OverflowError, ValueError):  # 10**400 does not fit a float
        raise RequestValidationError(field, value, "must be between 0 and 1 inclusive") from None
    if not math.isfinite(x):
        raise RequestValidationError(field, value, "must be a finite number between 0 and 1")
    if not 0.0 <= x <= 1.0:
        raise RequestValidationError(field, value, "must be between 0 and 1 inclusive")
    # 0.57 is not exactly 57/100 in binary: compare on the grid with a tolerance.
    if abs(x * 100 - round(x * 100)) >= 1e-9:
        raise RequestValidationError(
            field, value, "must be a multiple of 0.01 (two decimal places, e.g. 0.61)"
        )


def _check_length(field: str, value: str | None, limit: int, model: str | None) -> None:
    if value is not None and len(value) > limit:
        which = f"model {model}" if model else "the default model"
        raise RequestValidationError(
            field, value, f"is {len(value)} characters; at most {limit} are allowed for {which}"
        )


def _check_lengths(request: RequestFields, limits: LengthLimits) -> None:
    model = request.model
    # The attributes, not limits.limit(Field...): this runs for every submit.
    _check_length("prompt", request.prompt, limits.prompt, model)
    _check_length("lyrics", request.lyrics, limits.prompt, model)  # lyrics share the prompt's
    _check_length("style", request.style, limits.style, model)
    _check_length("title", request.title, limits.title, model)
    _check_length("negative_tags", request.negative_tags, limits.negative_tags, model)


def _check_model(model: str | None) -> None:
    if isinstance(model, UncheckedModel):
        if not model.strip():
            raise RequestValidationError("model", model, "UncheckedModel needs a model name")
        return
    if model is not None and model not in KNOWN_MODELS:
        raise RequestValidationError(
            "model",
            model,
            f"is not a known model ({', '.join(KNOWN_MODELS)}); "
            "wrap a newer one as UncheckedModel(...) to send it anyway",
        )


def validate_request(request: RequestFields) -> None:
    """Raise ``RequestValidationError`` for the first rule ``request`` breaks."""
    require_url("upload_url", request.upload_url)
    if request.callback_url is not None:
        require_url("callback_url", request.callback_url)
    for name in ("prompt", "title", "style", "negative_tags"):
        require_text(name, getattr(request, name))
    if request.lyrics is not None:
        require_text("lyrics", request.lyrics)
    if request.vocal_gender is not None and request.vocal_gender not in ("m", "f"):
        raise RequestValidationError(
            "vocal_gender", request.vocal_gender, "must be 'm' or 'f' (or left out)"
        )
    for name in ("style_weight", "weirdness_constraint", "audio_weight"):
        _check_weight(name, getattr(request, name))
    variety = request.variety
    if variety is not None and (
        isinstance(variety, bool) or not isinstance(variety, int) or not 0 <= variety <= 4
    ):
        raise RequestValidationError(
            "variety", variety, "must be a whole number from 0 (off) to 4 (max)"
        )
    _check_model(request.model)
    if not _LENGTHS_CHECKED_LATER.get():
        _check_lengths(request, limits_for(request.model))


_LENGTHS_CHECKED_LATER: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "addvocals_lengths_checked_later", default=False
)


@contextlib.contextmanager
def lengths_checked_later() -> Iterator[None]:
    """Requests built inside skip the default length rows: a client with limits of its
    own (``length_limits=``) checks them itself, right after, with ``check_lengths``."""
    token = _LENGTHS_CHECKED_LATER.set(True)
    try:
        yield
    finally:
        _LENGTHS_CHECKED_LATER.reset(token)


def check_lengths(request: RequestFields, limits: LengthLimits) -> None:
    """Raise ``RequestValidationError`` for the first field longer than ``limits`` allow."""
    _check_lengths(request, limits)


def check_provider_lengths(request: RequestFields, profile: ProviderProfile) -> None:
    """The lengths ``profile`` caps lower than the model's row (kie: titles at 80).
    Nothing to do, and nothing done, for a provider that adds no cap of its own."""
    limits = profile.limits(request.model)
    model_row = limits_for(request.model)
    if limits is not model_row and limits != model_row:  # the same row, mostly: no compare
        _check_lengths(request, limits)
