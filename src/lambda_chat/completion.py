"""Calling OpenAI Chat Completions: one client per container, attempts fitted into the deadline.

The SDK's own retries are off (`max_retries=0`): this module decides what is
worth another attempt, because only it knows how much time is left. It also
adapts to what the endpoint accepts without per-model code: a model that rejects
the default temperature, or the token-limit parameter we sent, is retried
without it (or with the other parameter) and remembered for the container.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

from lambda_chat.deadline import Deadline
from lambda_chat.errors import (
    ChatError,
    DeadlineExceeded,
    UpstreamKeyRejected,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejectedRequest,
    from_openai,
)
from lambda_chat.models import UpstreamRequest, Usage

if TYPE_CHECKING:
    import openai

# The key is sent per request in this header, so the client built at init holds no secret.
PLACEHOLDER_KEY = "set-per-request"
TOKEN_PARAMETERS = ("max_tokens", "max_completion_tokens")
MIN_ATTEMPT_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 4.0
# OS entropy per call: no random state is captured at init, so containers restored from one SnapStart snapshot
# do not all back off in step.
_JITTER = random.SystemRandom()


class KeyProvider(Protocol):
    def get(self) -> str: ...

    def refresh(self) -> str: ...


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage | None
    finish_reason: str | None
    model: str | None
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    upstream_ms: float | None = None  # how long the successful attempt waited for OpenAI
    document: dict[str, Any] = field(default_factory=dict)  # the upstream's JSON, as it answered


def _no_span(name: str) -> AbstractContextManager[Any]:
    return nullcontext()


@dataclass
class EndpointQuirks:
    """What this container has learned about models on its endpoint."""

    fixed_temperature_models: set[str] = field(default_factory=set)
    token_parameter_by_model: dict[str, str] = field(default_factory=dict)


def build_client(base_url: str | None) -> openai.OpenAI:
    """The container's one client. No retries (we budget them) and no key (sent per call)."""
    import openai

    return openai.OpenAI(api_key=PLACEHOLDER_KEY, base_url=base_url, max_retries=0)


class ChatCompleter:
    def __init__(
        self,
        client: openai.OpenAI,
        keys: KeyProvider,
        *,
        token_parameter: str,
        max_attempts: int,
        span: Callable[[str], AbstractContextManager[Any]] = _no_span,
    ) -> None:
        self._client = client
        self._keys = keys
        self._token_parameter = token_parameter
        self._max_attempts = max_attempts
        self._span = span
        self.quirks = EndpointQuirks()

    def complete(self, request: UpstreamRequest, deadline: Deadline) -> Completion:
        with self._span("read OpenAI key"):
            key = self._keys.get()
        key_refreshed = False
        adapted: set[str] = set()  # each parameter is adapted at most once per call
        attempt = 0
        while True:
            attempt += 1
            params = self._params(request)
            started = time.perf_counter()
            try:
                with self._span("OpenAI chat completion"):
                    completion = self._send(params, key, deadline)
                return replace(completion, upstream_ms=round((time.perf_counter() - started) * 1000, 1))
            except UpstreamKeyRejected:
                if key_refreshed:
                    raise
                with self._span("re-read OpenAI key"):
                    key = self._keys.refresh()
                key_refreshed = True
            except UpstreamRejectedRequest as exc:
                if not self._adapt(request, params, exc, adapted):
                    raise
            except ChatError as exc:
                pause = self._pause_before_retry(exc, attempt) if exc.retryable else None
                if (
                    attempt >= self._max_attempts
                    or pause is None
                    or pause + MIN_ATTEMPT_SECONDS >= deadline.remaining()
                ):
                    raise
                time.sleep(pause)

    def _params(self, request: UpstreamRequest) -> dict[str, Any]:
        model = request.model
        params: dict[str, Any] = {**request.extra, "model": model, "messages": request.messages}
        if request.temperature is not None and (
            request.temperature_explicit or model not in self.quirks.fixed_temperature_models
        ):
            params["temperature"] = request.temperature
        token_parameter = self.quirks.token_parameter_by_model.get(model, self._token_parameter)
        params[token_parameter] = request.max_tokens
        return params

    def _adapt(
        self,
        request: UpstreamRequest,
        params: dict[str, Any],
        exc: UpstreamRejectedRequest,
        adapted: set[str],
    ) -> bool:
        """Learn from a rejected parameter; True when another attempt makes sense (once per kind per call)."""
        model = request.model
        if exc.param == "temperature" and not request.temperature_explicit and "temperature" in params:
            self.quirks.fixed_temperature_models.add(model)
        elif exc.param in TOKEN_PARAMETERS and exc.param in params and "token_limit" not in adapted:
            other = TOKEN_PARAMETERS[1 - TOKEN_PARAMETERS.index(exc.param)]
            self.quirks.token_parameter_by_model[model] = other
            adapted.add("token_limit")
        else:
            return False
        return True

    def _pause_before_retry(self, exc: ChatError, attempt: int) -> float | None:
        if isinstance(exc, UpstreamRateLimited) and exc.retry_after is not None:
            return parse_retry_after(exc.retry_after)
        backoff: float = min(0.25 * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        return backoff * _JITTER.uniform(0.5, 1.0)

    def _send(self, params: dict[str, Any], key: str, deadline: Deadline) -> Completion:
        """One POST through the SDK's own request path (its retries off, its errors as usual).

        `client.post` with `cast_to=httpx2.Response` is the SDK's documented way to make a custom
        request: it skips the per-call conversion of `params` into the SDK's types (about 40% of a
        `create` call), which our already-plain JSON does not need, and we parse the body once.
        """
        import httpx2
        import openai

        remaining = deadline.remaining()
        if remaining < MIN_ATTEMPT_SECONDS:
            raise DeadlineExceeded("no time was left to call OpenAI before the deadline")
        try:
            response = self._client.post(
                "/chat/completions",
                cast_to=httpx2.Response,
                body=params,
                options={"headers": {"Authorization": f"Bearer {key}"}, "timeout": remaining},
            )
            body = response.content
        except openai.OpenAIError as exc:
            raise from_openai(exc) from None
        return parse_completion(body)


def parse_completion(body: bytes) -> Completion:
    """Read a chat completion body; anything unreadable is the upstream's fault (502)."""
    try:
        document = json.loads(body)
    except ValueError:
        raise UpstreamMalformed("OpenAI sent a response that is not JSON") from None
    choices = document.get("choices") if isinstance(document, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamMalformed("OpenAI sent a response without choices")
    choice = choices[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if content is not None and not isinstance(content, str):
        raise UpstreamMalformed("OpenAI sent a response whose message content is not text")
    finish_reason = choice.get("finish_reason")
    model = document.get("model")
    usage = document.get("usage")
    return Completion(
        text=content or "",
        usage=_usage(usage),
        finish_reason=finish_reason if isinstance(finish_reason, str) else None,
        model=model if isinstance(model, str) else None,
        reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
        cached_tokens=_detail(usage, "prompt_tokens_details", "cached_tokens"),
        document=document,
    )


def _usage(value: object) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion, total = (value.get(name) for name in ("prompt_tokens", "completion_tokens", "total_tokens"))
    if not (_is_count(prompt) and _is_count(completion) and _is_count(total)):
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def _detail(usage: object, group: str, name: str) -> int | None:
    """A count from usage's details (reasoning, cached tokens), when the upstream reported it."""
    details = usage.get(group) if isinstance(usage, dict) else None
    value = details.get(name) if isinstance(details, dict) else None
    return value if _is_count(value) else None


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_retry_after(value: str) -> float | None:
    """Seconds from a Retry-After header (delta seconds or HTTP date); None if unreadable."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None
