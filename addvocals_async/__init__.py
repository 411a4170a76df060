"""addvocals_async: an asyncio SDK for the Add Vocals music API."""

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
from ._models import AddVocalsRequest, CallbackEvent, Stage, TaskDetails, TaskResult, Track, UncheckedModel
from ._providers import PROVIDERS, ProviderProfile
from ._version import __version__
