"""Calling OpenAI: one client per container, attempts fitted into the deadline.

The SDK's own retries are off (`max_retries=0`): this module decides what is
worth another attempt, because only it knows how much time is left. It also
adapts to what the endpoint accepts without per-model code: a model that rejects
the default temperature, or the token-limit parameter we sent, is retried
without it (or with the other parameter) and remembered for the container.
"""

from __future__ import annotations

import email.utils
import inspect
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from lambda_chat.answers import Answer, read_answer
from lambda_chat.deadline import Deadline, elapsed_ms
from lambda_chat.errors import (
    ChatError,
    DeadlineExceeded,
    UpstreamKeyRejected,
    UpstreamRateLimited,
    UpstreamRejectedRequest,
    from_openai,
)
from lambda_chat.models import UpstreamRequest
from lambda_chat.runners import INLINE, Runner

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

    def cached(self) -> str | None: ...  # the key if held and fresh, with no network call


def no_span(name: str) -> AbstractContextManager[Any]:
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


@dataclass
class _Attempts:
    """What one call has used up: attempts, its one key re-read, its one adaptation per parameter kind."""

    count: int = 0
    key_refreshed: bool = False
    adapted: set[str] = field(default_factory=set)
    max_tokens: int | None = None  # this call's output limit, lowered to what the endpoint said the model writes


@dataclass(frozen=True)
class _Next:
    """What to do before the next attempt."""

    refresh_key: bool = False
    pause: float = 0.0


class _AttemptPlanner:
    """The one attempt plan of every upstream call: parameters, adaptation, retries within the call, key refresh.

    The SDK client is built by the first use (or by `warm()` at init): each entry point builds only the one it uses.
    """

    def __init__(
        self,
        client: Any,  # the SDK client, or a function that builds it
        keys: KeyProvider,
        *,
        token_parameter: str,
        max_attempts: int,
        runner: Runner = INLINE,
        span: Callable[[str], AbstractContextManager[Any]] = no_span,
        quirks: EndpointQuirks | None = None,
    ) -> None:
        self._client_source = client
        self._runner = runner
        self._keys = keys
        self._token_parameter = token_parameter
        self._max_attempts = max_attempts
        self._span = span
        self.quirks = quirks if quirks is not None else EndpointQuirks()

    @cached_property
    def _client(self) -> Any:
        return self._client_source() if callable(self._client_source) else self._client_source

    def warm(self) -> None:
        _ = self._client

    def _recover(
        self, exc: ChatError, request: UpstreamRequest, params: dict[str, Any], attempts: _Attempts, deadline: Deadline
    ) -> _Next:
        """After a failed attempt: how to try again, or re-raise `exc` when another attempt cannot help."""
        if isinstance(exc, UpstreamKeyRejected):
            if attempts.key_refreshed:
                raise exc
            attempts.key_refreshed = True
            return _Next(refresh_key=True)
        if isinstance(exc, UpstreamRejectedRequest):
            if not self._adapt(request, params, exc, attempts):
                raise exc
            return _Next()
        pause = self._pause_before_retry(exc, attempts.count) if exc.retry_within_call else None
        if attempts.count >= self._max_attempts or pause is None or pause + MIN_ATTEMPT_SECONDS >= deadline.remaining():
            raise exc
        return _Next(pause=pause)

    def _params(self, request: UpstreamRequest, attempts: _Attempts) -> dict[str, Any]:
        max_tokens = attempts.max_tokens or request.max_tokens
        if request.kind != "chat":  # the body as given, with the model and the token limit checked at the edge
            body: dict[str, Any] = {**request.extra, "model": request.model} if request.kind != "relay" else {}
            if max_tokens is not None:
                body["max_output_tokens"] = max_tokens
            return body
        model = request.model
        params: dict[str, Any] = {**request.extra, "model": model, "messages": request.messages}
        if request.temperature is not None and (
            request.temperature_explicit or model not in self.quirks.fixed_temperature_models
        ):
            params["temperature"] = request.temperature
        token_parameter = self.quirks.token_parameter_by_model.get(model, self._token_parameter)
        params[token_parameter] = max_tokens
        return params

    def _adapt(
        self,
        request: UpstreamRequest,
        params: dict[str, Any],
        exc: UpstreamRejectedRequest,
        attempts: _Attempts,
    ) -> bool:
        """Learn from a rejected parameter; True when another attempt makes sense (once per kind per call).

        What is learned for the container is only ever about the model (its temperature is fixed, it takes the
        other token parameter), never a value one caller sent; a limit the function chose, larger than the model
        writes, is lowered for this call alone.
        """
        model, adapted = request.model, attempts.adapted
        cap = _stated_cap(exc) if not request.caller_token_limit and "token_cap" not in adapted else None
        if cap is not None and cap < (attempts.max_tokens or request.max_tokens or cap + 1):
            attempts.max_tokens = cap
            adapted.add("token_cap")
        elif exc.param == "temperature" and not request.temperature_explicit and "temperature" in params:
            self.quirks.fixed_temperature_models.add(model)
        elif (
            exc.param in TOKEN_PARAMETERS
            and exc.param in params
            and "token_limit" not in adapted
            and _says_unsupported(exc)  # not a value the endpoint refused (one caller's), but the parameter itself
        ):
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


def _says_unsupported(exc: UpstreamRejectedRequest) -> bool:
    """The endpoint refused the parameter itself (OpenAI: code `unsupported_parameter`), not its value."""
    return exc.code == "unsupported_parameter" or "unsupported parameter:" in exc.message.lower()


_AT_MOST = re.compile(r"supports at most (\d{1,9}) (?:completion|output) tokens")


def _stated_cap(exc: UpstreamRejectedRequest) -> int | None:
    """The most the model writes, as the endpoint said when it refused a larger limit ("This model supports at most
    16384 completion tokens")."""
    if exc.param not in (*TOKEN_PARAMETERS, "max_output_tokens"):
        return None
    found = _AT_MOST.search(exc.message)
    return int(found.group(1)) if found and int(found.group(1)) > 0 else None


class OpenAICaller(_AttemptPlanner):
    """Whole answers and streams, through either SDK client: the blocking one (the handler, driven inline) or the
    async one (the streaming app, on its event loop). Every call, whichever, follows the one attempt plan.

    Everything up to a stream's first chunk (the key, retries, adaptation) is planned like a whole answer, so a
    failure there is an ordinary HTTP error. The caller closes the stream to cancel the upstream request.
    """

    async def complete(self, request: UpstreamRequest, deadline: Deadline) -> Answer:
        started = time.perf_counter()
        body: bytes = await self._attempts(request, deadline, self._fetch)
        return read_answer(request.kind, body, upstream_ms=elapsed_ms(started))

    async def open(self, request: UpstreamRequest, deadline: Deadline) -> openai.AsyncStream[object]:
        stream: openai.AsyncStream[object] = await self._attempts(request, deadline, self._open)
        return stream

    async def _attempts(
        self, request: UpstreamRequest, deadline: Deadline, attempt: Callable[..., Awaitable[Any]]
    ) -> Any:
        """Attempts as the plan says, until one succeeds or another cannot help."""
        with self._span("read OpenAI key"):
            key = self._keys.cached() or await self._runner.run(self._keys.get)
        attempts = _Attempts()
        while True:
            attempts.count += 1
            params = self._params(request, attempts)
            try:
                with self._span(f"OpenAI {request.kind}"):
                    return await attempt(request, params, key, deadline)
            except ChatError as exc:
                step = self._recover(exc, request, params, attempts, deadline)
            if step.refresh_key:
                with self._span("re-read OpenAI key"):
                    key = await self._runner.run(self._keys.refresh)
            if step.pause:
                await self._runner.sleep(step.pause)

    async def _fetch(self, request: UpstreamRequest, params: dict[str, Any], key: str, deadline: Deadline) -> bytes:
        """One request through the SDK's own request path (its retries off, its errors as usual).

        `client.post` with `cast_to=httpx2.Response` is the SDK's documented way to make a custom request: it skips
        the per-call conversion of `params` into the SDK's types (about 40% of a `create` call), which our
        already-plain JSON does not need, and the body is read once, by `read_answer`.
        """
        import openai

        method, arguments = _request_arguments(request, params, key, deadline)
        try:
            response = getattr(self._client, method)(request.path, **arguments)
            if inspect.isawaitable(response):  # the async client's
                response = await response
        except openai.OpenAIError as exc:
            raise from_openai(exc, key) from None
        return bytes(response.content)

    async def _open(
        self, request: UpstreamRequest, params: dict[str, Any], key: str, deadline: Deadline
    ) -> openai.AsyncStream[object]:
        import openai

        body = {**params, "stream": True}
        if request.kind == "chat":  # usage always asked for, so every stream is metered (passed on if asked for)
            body["stream_options"] = {"include_usage": True}
        _, arguments = _request_arguments(request, body, key, deadline)
        try:
            stream: openai.AsyncStream[object] = await self._client.post(
                request.path, **{**arguments, "cast_to": object}, stream=True, stream_cls=openai.AsyncStream[object]
            )
        except openai.OpenAIError as exc:
            raise from_openai(exc, key) from None
        return stream


def _request_arguments(
    request: UpstreamRequest, params: dict[str, Any], key: str, deadline: Deadline
) -> tuple[str, dict[str, Any]]:
    """The SDK client method and its arguments for one attempt, with the attempt's share of the deadline."""
    import httpx2

    remaining = deadline.remaining()
    if remaining < MIN_ATTEMPT_SECONDS:
        raise DeadlineExceeded("no time was left to call OpenAI before the deadline")
    arguments: dict[str, Any] = {
        "cast_to": httpx2.Response,
        "options": {"headers": {"Authorization": f"Bearer {key}"}, "timeout": remaining},
    }
    if request.method == "POST":
        arguments["body"] = params or None
    if request.query:
        arguments["options"]["params"] = _query_params(request.query)
    return request.method.lower(), arguments


def _query_params(query: tuple[tuple[str, str], ...]) -> dict[str, object]:
    """Query pairs as the SDK's params (a repeated name, or `include[]`, as a list: the SDK writes `include[]=`)."""
    params: dict[str, object] = {}
    for name, value in query:
        key = name.removesuffix("[]")
        if key in params or key != name:
            given = params.get(key)
            listed = given if isinstance(given, list) else ([] if given is None else [given])
            params[key] = [*listed, value]
        else:
            params[key] = value
    return params


def build_async_client(base_url: str | None) -> openai.AsyncOpenAI:
    """The streaming app's one async client: like `build_client`, no retries and no key."""
    import openai

    return openai.AsyncOpenAI(api_key=PLACEHOLDER_KEY, base_url=base_url, max_retries=0)


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
