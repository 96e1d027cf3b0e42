"""Settings to clients, store, budgets and service: what each entry point's container builds once, at init.

The handler function's service calls OpenAI through the blocking SDK client, driven inline; the streaming app's,
through the async client on its event loop. Where both run in one process (`make serve`), they share the settings,
the key's cache, the budget table's client and what the endpoint taught either of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Literal

from aws_lambda_powertools import Logger

from lambda_chat import telemetry
from lambda_chat.api_key import SecretsManagerKey
from lambda_chat.completion import EndpointQuirks, OpenAICaller, build_async_client, build_client, no_span
from lambda_chat.runners import INLINE, THREADS
from lambda_chat.service import ChatService
from lambda_chat.settings import ConfigurationError, Settings, get_settings

if TYPE_CHECKING:
    from lambda_chat.budget import Budgets
    from lambda_chat.idempotency import IdempotencyGuard

Entry = Literal["handler", "app"]  # the handler function (Lambda events), or the streaming app (ASGI)

logger = Logger(service=telemetry.SERVICE_NAME, child=True)


def configured_service(entry: Entry) -> ChatService | None:
    """The container's service for this entry point, or None (logged) when its configuration is invalid."""
    try:
        return service_for(entry)
    except ConfigurationError as exc:
        logger.error("function is misconfigured", reason=str(exc))
        return None


@lru_cache(maxsize=2)
def service_for(entry: Entry) -> ChatService:
    shared = _shared()
    settings = shared.settings
    blocking = entry == "handler"  # the blocking SDK client, driven inline; else the async one, on the event loop
    runner = INLINE if blocking else THREADS
    build: Callable[[str | None], object] = build_client if blocking else build_async_client
    upstream = OpenAICaller(
        partial(build, settings.base_url),
        shared.keys,
        runner=runner,
        token_parameter=settings.token_parameter,
        max_attempts=settings.max_attempts,
        span=shared.tracing.span if blocking else no_span,  # X-Ray's segments are the handler function's
        quirks=shared.quirks,
    )
    return ChatService(
        settings,
        upstream,
        runner=runner,
        prices=settings.prices,
        guard_factory=shared.guard_factory,
        tracing=shared.tracing,
        budgets=shared.budgets,
    )


def reset() -> None:
    """Forget every service and setting built so far (tests: each starts as a cold container)."""
    service_for.cache_clear()
    _shared.cache_clear()
    get_settings.cache_clear()


@dataclass(frozen=True)
class _Shared:
    settings: Settings
    keys: SecretsManagerKey
    quirks: EndpointQuirks
    tracing: telemetry.Tracing
    budgets: Budgets | None
    guard_factory: Callable[[], IdempotencyGuard] | None


@lru_cache(maxsize=1)
def _shared() -> _Shared:
    settings = get_settings()
    return _Shared(
        settings=settings,
        keys=SecretsManagerKey(settings.secret_id, settings.secret_max_age_seconds),
        quirks=EndpointQuirks(),
        tracing=telemetry.Tracing(enabled=settings.tracing_enabled),
        budgets=_budgets(settings),
        guard_factory=_guard_factory(settings),
    )


def _budgets(settings: Settings) -> Budgets | None:
    if not settings.budget_table:
        return None
    from lambda_chat.budget import Budgets, Limits
    from lambda_chat.budget_store import BudgetStore

    defaults = Limits(
        daily_usd=settings.default_daily_budget_usd,
        monthly_usd=settings.default_monthly_budget_usd,
        daily_tokens=settings.default_daily_budget_tokens,
        monthly_tokens=settings.default_monthly_budget_tokens,
    )
    store = BudgetStore(
        settings.budget_table,
        defaults,
        limits_max_age_seconds=settings.budget_limits_cache_seconds,
        timeout_seconds=settings.budget_table_timeout_seconds,
    )
    return Budgets(
        store,
        settings.prices,
        fail_open=settings.budget_fail_mode == "open",
        allow_unpriced=settings.allow_unpriced_models,
    )


def _guard_factory(settings: Settings) -> Callable[[], IdempotencyGuard] | None:
    table = settings.idempotency_table
    if not table:
        return None

    def build() -> IdempotencyGuard:
        from lambda_chat.idempotency import IdempotencyGuard

        return IdempotencyGuard(table, settings.idempotency_expiry_seconds)

    return build
