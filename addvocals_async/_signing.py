"""Authentication of callbacks, as pure functions.

Two independent checks:

- **URL tokens** (every provider). Each task's callback URL ends in ``<ref>.<mac>``: a
  random 128-bit reference and an HMAC-SHA256 of it under the receiver's secret, cut to
  128 bits. The receiver checks it in constant time without any lookup, so a restarted
  receiver, or another process with the same secret, still knows a genuine URL.
- **kie signatures** (once the account has a ``webhookHmacKey``). ``X-Webhook-Signature`` is
  ``base64(HMAC-SHA256(key, taskId + "." + timestamp))`` and ``X-Webhook-Timestamp`` the
  send time in Unix seconds, checked inside a two-sided window.

Secrets are held in ``Secret``, whose repr never shows them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

from ._convert import NOT_JSON, callback_task_id, parse_json
from ._errors import WebhookVerificationError

__all__ = [
    "Secret",
    "TokenSigner",
    "sign_webhook",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Webhook-Signature"
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
DEFAULT_TOLERANCE = 300.0
_TOKEN_DOMAIN = b"addvocals-callback-token:"
FILE_TOKEN_DOMAIN = b"addvocals-file-token:"
"""The domain of the tokens in served-file URLs: the same scheme as callback tokens, keyed
apart, so a callback token is no file token and a file token no callback token."""


class Secret:
    """Bytes that must never be shown: ``repr`` and ``str`` print ``Secret(***)``."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        self._value = value.encode() if isinstance(value, str) else bytes(value)

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value).digest())


def as_secret(value: str | bytes | Secret | None, env: str) -> Secret | None:
    """The secret given, else the one in environment variable ``env``, else None."""
    if isinstance(value, Secret):
        return value
    if value is None:
        value = os.environ.get(env) or None
    return None if value is None else Secret(value)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class TokenSigner:
    """Makes and checks the self-authenticating tokens in callback URLs."""

    __slots__ = ("_keyed",)

    MIN_SECRET_BYTES = 16

    def __init__(self, secret: Secret, *, domain: bytes = _TOKEN_DOMAIN) -> None:
        if len(secret.reveal()) < self.MIN_SECRET_BYTES:
            raise ValueError(
                f"the receiver secret must be at least {self.MIN_SECRET_BYTES} bytes long"
            )
        # Keyed once; every check copies it instead of redoing the key schedule.
        self._keyed = hmac.new(secret.reveal(), domain, hashlib.sha256)

    def __repr__(self) -> str:
        return "TokenSigner(secret=***)"

    def _mac(self, ref: str) -> str:
        digest = self._keyed.copy()
        digest.update(ref.encode("ascii"))
        return _b64url(digest.digest()[:16])

    def new_token(self) -> tuple[str, str]:
        """A fresh ``(ref, token)``: ``ref`` names the registration, ``token`` goes in the URL."""
        ref = secrets.token_urlsafe(16)
        return ref, f"{ref}.{self._mac(ref)}"

    def check(self, token: str) -> str | None:
        """The ``ref`` of a genuine token, ``None`` for anything else (constant time)."""
        ref, dot, mac = token.partition(".")
        if not dot or not ref or len(ref) > 64 or not token.isascii():
            return None
        if not hmac.compare_digest(mac, self._mac(ref)):  # ASCII str: compared in constant time
            return None
        return ref


def sign_webhook(task_id: str, timestamp: int, key: str | bytes | Secret) -> str:
    """kie's signature: ``base64(HMAC-SHA256(key, f"{task_id}.{timestamp}"))``."""
    raw = key.reveal() if isinstance(key, Secret) else key.encode() if isinstance(key, str) else key
    # surrogatepass: a task id from a hostile body may hold a lone surrogate, which plain
    # UTF-8 refuses; it then signs to something no genuine sender produced, never raises.
    signed = f"{task_id}.{timestamp}".encode("utf-8", "surrogatepass")
    digest = hmac.new(raw, signed, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _signed_task_id(body: bytes | bytearray | str | Mapping[str, Any] | None) -> str | None:
    if isinstance(body, (bytes, bytearray, str)):
        parsed = parse_json(bytes(body) if isinstance(body, bytearray) else body)
        if parsed is NOT_JSON:
            raise WebhookVerificationError("the callback body is not JSON")
        body = parsed
    return callback_task_id(body) if isinstance(body, Mapping) else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def verify_signature(
    body: bytes | bytearray | str | Mapping[str, Any] | None,
    headers: Mapping[str, str],
    key: str | bytes | Secret,
    *,
    task_id: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a kie-signed callback; raise ``WebhookVerificationError`` if it fails.

    ``body`` is the request's raw body (bytes or text, as openai's and replicate's
    verifiers take it) or the callback already parsed; the task id the signature covers is
    read from ``data.task_id``, then ``taskId``, then ``data.taskId``. Pass ``task_id=``
    (and ``body=None``) to check a task id you already have. ``headers`` are read
    case-insensitively. The timestamp must lie within ``tolerance`` seconds of ``now`` in
    either direction. kie signs only the task id and the time, not the body: keep the URL
    token check too.
    """
    if task_id is None:
        task_id = _signed_task_id(body)
    if not task_id:
        raise WebhookVerificationError("the callback names no task id to check the signature of")
    signature = _header(headers, SIGNATURE_HEADER)
    stamp = _header(headers, TIMESTAMP_HEADER)
    if signature is None or stamp is None:
        raise WebhookVerificationError(
            f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header on a signed callback"
        )
    stamp = stamp.strip()
    # ASCII digits only, and few of them: str.isdigit() also accepts "²" and other
    # scripts' digits, and int() refuses over 4300 digits; both raised a bare ValueError.
    if not (stamp.isascii() and stamp.isdigit()) or len(stamp) > 20:
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} is not an integer: {stamp[:20]!r}")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"{TIMESTAMP_HEADER} is {current - timestamp:+.0f} s away from now "
            f"(allowed: ±{tolerance:g} s); a replay or a wrong clock"
        )
    expected = sign_webhook(task_id, timestamp, key)
    if not hmac.compare_digest(signature.strip().encode("ascii", "replace"), expected.encode()):
        raise WebhookVerificationError("the webhook signature does not match")
