"""The function's own error types, and the one place that translates others into them.

Each error carries the HTTP status it stands for and a message a person can act
on. SDK and AWS exceptions are mapped by type (and by the structured `code`
fields they carry), never by their message text.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import openai


class ChatError(Exception):
    """Base of every failure the caller is told about."""

    status: ClassVar[int] = 500
    retry_within_call: ClassVar[bool] = False  # worth another attempt within this call's deadline
    code: str | None = None  # a stable, machine-readable name (OpenAI's own code for its rejections)
    retry_after: str | None = None
    retry_later: ClassVar[bool | None] = None  # another call later may succeed; None: as the status says

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault, when one is


class InvalidRequest(ChatError):
    status = 400
    code = "invalid_request"


class NotFound(ChatError):
    """No route at this path."""

    status = 404
    code = "not_found"


class MethodNotAllowed(ChatError):
    """The route exists, with other methods (`allow` lists them, for the `Allow` header)."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str) -> None:
        super().__init__(message)
        self.allow = allow


class PayloadTooLarge(ChatError):
    status = 413
    code = "payload_too_large"


class UpstreamRejectedRequest(ChatError):
    """OpenAI said the request itself is wrong (unknown model, context too long...)."""

    status = 400

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param)
        self.code = code


class UpstreamRateLimited(ChatError):
    status = 429
    code = "rate_limit_exceeded"
    retry_within_call = True

    def __init__(self, message: str, *, retry_after: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamAuthRejected(ChatError):
    """OpenAI refused our key (401/403): the operator must fix the secret."""

    status = 502
    code = "upstream_key_rejected"


class UpstreamKeyRejected(UpstreamAuthRejected):
    """OpenAI answered 401: the cached key may have been rotated."""


class UpstreamUnavailable(ChatError):
    """OpenAI failed, or could not be reached, before doing the work: safe to try again."""

    status = 502
    code = "upstream_unavailable"
    retry_within_call = True


class UpstreamMalformed(ChatError):
    """OpenAI's answer was cut off or unreadable. Not retried: the call may have been billed."""

    status = 502
    code = "upstream_malformed"


class DeadlineExceeded(ChatError):
    status = 504
    code = "timeout"


class SecretUnavailable(ChatError):
    status = 500
    code = "api_key_unavailable"


class InternalError(ChatError):
    status = 500
    code = "internal_error"


class RetryLater(Exception):
    """Raised to Lambda (async triggers only) so its retries and on-failure destination take over."""


class BudgetExceeded(ChatError):
    """The caller's budget for a period has no room for this call; no upstream call was made."""

    status = 429
    code = "budget_exceeded"
    retry_later = False  # not before the period ends: neither an SDK nor Lambda's async retries should try again soon

    def __init__(self, message: str, *, retry_after: str | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetUnavailable(ChatError):
    """The budget table could not be used, and budgets fail closed."""

    status = 503
    code = "budget_store_unavailable"


class IdempotencyConflict(ChatError):
    """The same idempotency key is being served right now."""

    status = 409
    code = "idempotency_key_in_use"


class IdempotencyKeyReused(ChatError):
    status = 422
    code = "idempotency_key_reused"


class IdempotentAnswerNotStored(ChatError):
    """The key's answer was given once but was too large to keep: it cannot be replayed (and is not sent again)."""

    status = 410
    code = "idempotent_answer_not_stored"
    retry_later = False


class IdempotencyUnavailable(ChatError):
    status = 503
    code = "idempotency_store_unavailable"


def from_openai(exc: openai.OpenAIError, key: str | None = None) -> ChatError:
    """Translate an `openai` SDK exception into one of ours; nothing of `key` (the function's) reaches the caller."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return DeadlineExceeded("OpenAI did not answer before the deadline")
    if isinstance(exc, openai.APIConnectionError):
        import httpx2

        if isinstance(exc.__cause__, (httpx2.ConnectError, httpx2.ConnectTimeout)):
            return UpstreamUnavailable("could not connect to OpenAI")
        return UpstreamMalformed("the connection to OpenAI broke before its answer was complete")
    if isinstance(exc, openai.APIResponseValidationError):
        return UpstreamMalformed("OpenAI sent a response that could not be read")
    if isinstance(exc, openai.APIStatusError):
        message = scrub(_upstream_message(exc), key)
        if isinstance(exc, openai.AuthenticationError):  # its message quotes the key: none of it is passed on
            return UpstreamKeyRejected("OpenAI rejected the function's API key; the operator must update its secret")
        if isinstance(exc, openai.PermissionDeniedError):
            return UpstreamAuthRejected(f"OpenAI denied the function's API key access: {message}")
        if isinstance(exc, openai.RateLimitError):
            if exc.code == "insufficient_quota":
                return UpstreamAuthRejected(f"OpenAI account has no quota left: {message}")
            return UpstreamRateLimited(
                f"OpenAI rate limit reached: {message}",
                retry_after=exc.response.headers.get("retry-after"),
            )
        if isinstance(exc, (openai.BadRequestError, openai.NotFoundError, openai.UnprocessableEntityError)):
            param, code = _text(exc.param), _text(exc.code)
            return UpstreamRejectedRequest(f"OpenAI rejected the request: {message}", param=param, code=code)
        return UpstreamUnavailable(f"OpenAI answered with status {exc.status_code}: {message}")
    if isinstance(exc, openai.APIError):  # an error event in the middle of a stream
        return UpstreamUnavailable(f"OpenAI failed while streaming: {scrub(_shorten(str(exc.message)), key)}")
    return UpstreamUnavailable("OpenAI call failed")


# What an upstream message may quote of a key: OpenAI's keys (sk-..., sk-proj-..., masked as sk-****...abcd) or a
# masked tail on its own (****abcd, ...abcd); and whatever follows "API key provided:" or "Bearer" (its label kept).
_KEYS = re.compile(r"\b(?:sk|rk|pk|sess)-[^\s\"',;]{2,}|(?:\*{3,}|\.{3}|…)[^\s\"',;]{1,8}")
_LABELLED_KEYS = re.compile(r"(?i)(api[ _-]?key(?: provided)?\s*[:=]\s*|bearer\s+)[^\s\"',;]+")
REDACTED = "[redacted]"


def scrub(text: str, key: str | None = None) -> str:
    """`text` with anything that looks like an API key, and `key` itself, replaced.

    Never a part of `key` on its own: upstream messages quote the caller's own input, so replacing, say, the key's
    last four characters wherever they appear would tell a caller whether its guess of them was right.
    """
    if key:
        text = text.replace(key, REDACTED)
    return _KEYS.sub(REDACTED, _LABELLED_KEYS.sub(r"\1" + REDACTED, text))


def _text(value: object) -> str | None:
    """A field of the upstream's error (param, code) as text, whatever type the upstream sent."""
    return value[:200] if isinstance(value, str) else None


def _upstream_message(exc: openai.APIStatusError) -> str:
    """OpenAI's own error text ("Incorrect API key provided..."), never a raw body dump."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return _shorten(inner["message"])
        for field in ("message", "detail"):  # an OpenAI-compatible server's own shapes (FastAPI says "detail")
            if isinstance(body.get(field), str):
                return _shorten(body[field])
    return f"HTTP {exc.status_code}"


def _shorten(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def from_secret_read(exc: Exception) -> SecretUnavailable:
    """Translate a failed Secrets Manager read; never says anything about the value."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, NoCredentialsError):
        return SecretUnavailable("could not read the OpenAI API key from Secrets Manager: no AWS credentials")
    if isinstance(cause, EndpointConnectionError):
        return SecretUnavailable("could not read the OpenAI API key: Secrets Manager could not be reached")
    code = cause.response.get("Error", {}).get("Code") if isinstance(cause, ClientError) else None
    reason = {
        "ResourceNotFoundException": "the secret does not exist",
        "AccessDeniedException": "the function is not allowed to read the secret",
        "DecryptionFailure": "the secret could not be decrypted",
        "ThrottlingException": "Secrets Manager throttled the read",
    }.get(code or "", "the read failed")
    return SecretUnavailable(f"could not read the OpenAI API key from Secrets Manager: {reason}")


def from_idempotency(exc: Exception) -> ChatError:
    """Translate a Powertools Idempotency failure (raised before OpenAI was called)."""
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyValidationError,
    )

    if isinstance(exc, IdempotencyAlreadyInProgressError):
        return IdempotencyConflict(
            "a request with this idempotency key is still in progress; retry when it has finished"
        )
    if isinstance(exc, IdempotencyValidationError):
        return IdempotencyKeyReused("this idempotency key was already used with a different request")
    return IdempotencyUnavailable("the idempotency store could not be used; the request was not sent, retry later")


# -- the budget table (DynamoDB through botocore): its failures, and which of them another try may pass ----------

_BUDGET_TABLE_REASONS = {
    "ResourceNotFoundException": "the budget table does not exist",
    "AccessDeniedException": "the function may not use the budget table",
    "ProvisionedThroughputExceededException": "the budget table is throttled",
    "ThrottlingException": "the budget table is throttled",
    "RequestLimitExceeded": "the budget table is throttled",
    "InternalServerError": "the budget table failed",
}
BUDGET_TABLE_TRANSIENT_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded", "InternalServerError"}
)


def dynamodb_error_code(exc: Exception) -> str | None:
    """DynamoDB's error code for a request it answered with an error (botocore's ClientError); None otherwise."""
    from botocore.exceptions import ClientError

    return str(exc.response.get("Error", {}).get("Code")) if isinstance(exc, ClientError) else None


def failed_condition(exc: Exception) -> dict[str, Any] | None:
    """The item as it was when `exc` is a conditional write refused for its condition ({} when DynamoDB did not
    return it); None for any other failure."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError) or dynamodb_error_code(exc) != "ConditionalCheckFailedException":
        return None
    return dict(exc.response.get("Item") or {})


def budget_table_retry_within_call(exc: Exception) -> bool:
    """Whether another try within this call may pass: a timeout, a refused or dropped connection, throttling."""
    from botocore.exceptions import ConnectionError as BotocoreConnectionError
    from botocore.exceptions import HTTPClientError

    code = dynamodb_error_code(exc)
    if code is not None:
        return code in BUDGET_TABLE_TRANSIENT_CODES
    return isinstance(exc, (HTTPClientError, BotocoreConnectionError))


def from_budget_table(exc: Exception) -> BudgetUnavailable:
    """Translate a failed budget table request (botocore's ClientError or BotoCoreError)."""
    code = dynamodb_error_code(exc)
    if code is None:
        return BudgetUnavailable("the budget table could not be reached; the request was not sent, retry later")
    reason = _BUDGET_TABLE_REASONS.get(code, "the budget table could not be used")
    return BudgetUnavailable(f"{reason}; the request was not sent, retry later")
