"""addvocals_async: an asyncio SDK for the Add Vocals music API.

``task = await client.add_vocals(...)`` then ``await task.complete()``: the built-in
``CallbackReceiver`` turns the API's staged callbacks into per-task results, and polling
of the details endpoint is the safety net. ``addvocals_async.testing`` holds a simulator
of the API for tests and demos.
"""

from ._client import AddVocalsClient, RetryPolicy
from ._errors import (
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
from ._models import (
    AddVocalsRequest,
    CallbackEvent,
    Stage,
    TaskDetails,
    TaskResult,
    Track,
    UncheckedModel,
)
from ._providers import PROVIDERS, ProviderProfile
from ._receiver import (
    RECEIVER_KEY,
    CallbackReceiver,
    DeliveryBackend,
    DeliveryResult,
    InMemoryBackend,
    ReceiverResponse,
    ReceiverStats,
)
from ._signing import sign_webhook, verify_signature
from ._tasks import PollPolicy, VocalTask
from ._version import __version__

__all__ = [
    "PROVIDERS",
    "RECEIVER_KEY",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AddVocalsClient",
    "AddVocalsError",
    "AddVocalsRequest",
    "AuthenticationError",
    "CallbackEvent",
    "CallbackReceiver",
    "DeliveryBackend",
    "DeliveryResult",
    "InMemoryBackend",
    "InsufficientCreditsError",
    "InvalidParametersError",
    "MaintenanceError",
    "NotFoundError",
    "PollPolicy",
    "PromptTooLongError",
    "ProviderProfile",
    "RateLimitError",
    "ReceiverClosedError",
    "ReceiverResponse",
    "ReceiverStats",
    "RequestValidationError",
    "RetryPolicy",
    "ServerError",
    "Stage",
    "TaskDetails",
    "TaskFailedError",
    "TaskResult",
    "TaskTimeoutError",
    "Track",
    "UncheckedModel",
    "VocalTask",
    "WebhookVerificationError",
    "__version__",
    "sign_webhook",
    "verify_signature",
]
