"""Configuration read from the environment once per container and validated.

A bad value fails the cold start loudly, naming the variable, instead of
failing some requests later.
"""

from __future__ import annotations

import os
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from lambda_chat.pricing import PriceTable

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _comma_separated(value: object) -> object:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class Settings(BaseModel):
    """Every knob of the function; the field alias is the environment variable."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    secret_id: str = Field(alias="OPENAI_API_KEY_SECRET_ID", min_length=1)
    secret_max_age_seconds: int = Field(300, alias="SECRET_CACHE_TTL_SECONDS", ge=0)
    default_model: str = Field("gpt-4o-mini", alias="DEFAULT_MODEL", min_length=1)
    allowed_models: Annotated[tuple[str, ...], BeforeValidator(_comma_separated)] = Field((), alias="ALLOWED_MODELS")
    embedding_models: Annotated[tuple[str, ...], BeforeValidator(_comma_separated)] = Field(
        ("text-embedding-3-small",), alias="EMBEDDING_MODELS", min_length=1
    )
    max_embedding_inputs: int = Field(2048, alias="MAX_EMBEDDING_INPUTS", gt=0)
    max_embedding_input_chars: int = Field(32_000, alias="MAX_EMBEDDING_INPUT_CHARS", gt=0)
    # Every text the model reads, tools and their schemas included: a coding agent's first turn is ~35,000 characters.
    max_prompt_chars: int = Field(256_000, alias="MAX_PROMPT_CHARS", gt=0)
    max_messages: int = Field(1000, alias="MAX_MESSAGES", gt=0)  # an agent's step adds three Responses input items
    max_body_bytes: int = Field(1_048_576, alias="MAX_BODY_BYTES", gt=0)
    # Output tokens one call may ask for (`n` answers together), reasoning tokens included: reasoning models need
    # tens of thousands to answer at all. The budget, not this ceiling, is what bounds a caller's cost.
    max_tokens_ceiling: int = Field(32_768, alias="MAX_TOKENS_CEILING", gt=0, le=10_000_000)
    max_tokens_over_ceiling: Literal["lower", "refuse"] = Field("lower", alias="MAX_TOKENS_OVER_CEILING")
    base_url: str | None = Field(None, alias="OPENAI_BASE_URL")
    token_limit_parameter: Literal["auto", "max_tokens", "max_completion_tokens"] = Field(
        "auto", alias="TOKEN_LIMIT_PARAMETER"
    )
    max_attempts: int = Field(3, alias="OPENAI_MAX_ATTEMPTS", ge=1, le=10)
    safety_margin_ms: int = Field(1000, alias="DEADLINE_SAFETY_MARGIN_MS", ge=0)
    api_gateway_limit_ms: int = Field(29_000, alias="API_GATEWAY_TIMEOUT_MS", gt=0)
    local_budget_ms: int = Field(60_000, alias="LOCAL_DEADLINE_MS", gt=0)
    idempotency_table: str | None = Field(None, alias="IDEMPOTENCY_TABLE")
    idempotency_expiry_seconds: int = Field(3600, alias="IDEMPOTENCY_EXPIRY_SECONDS", gt=0)
    tracing_enabled: bool = Field(False, alias="TRACING_ENABLED")
    model_prices_json: str | None = Field(None, alias="MODEL_PRICES_JSON")
    stream_keepalive_seconds: float = Field(15.0, alias="STREAM_KEEPALIVE_SECONDS", gt=0)
    event_caller_name: str | None = Field(None, alias="EVENT_CALLER_NAME", min_length=1, max_length=128)
    raise_retryable_async_failures: bool = Field(True, alias="RAISE_RETRYABLE_ASYNC_FAILURES")
    budget_table: str | None = Field(None, alias="BUDGET_TABLE")  # unset: no spend limits
    default_daily_budget_usd: Decimal | None = Field(None, alias="DEFAULT_DAILY_BUDGET_USD", ge=0)
    default_monthly_budget_usd: Decimal | None = Field(None, alias="DEFAULT_MONTHLY_BUDGET_USD", ge=0)
    default_daily_budget_tokens: int | None = Field(None, alias="DEFAULT_DAILY_BUDGET_TOKENS", ge=0)
    default_monthly_budget_tokens: int | None = Field(None, alias="DEFAULT_MONTHLY_BUDGET_TOKENS", ge=0)
    budget_fail_mode: Literal["closed", "open"] = Field("closed", alias="BUDGET_FAIL_MODE")
    allow_unpriced_models: bool = Field(False, alias="ALLOW_UNPRICED_MODELS")
    budget_limits_cache_seconds: float = Field(60, alias="BUDGET_LIMITS_CACHE_SECONDS", ge=0)
    budget_table_timeout_seconds: float = Field(2, alias="BUDGET_TABLE_TIMEOUT_SECONDS", gt=0, le=30)

    @field_validator("model_prices_json")
    @classmethod
    def _prices_parse(cls, value: str | None) -> str | None:
        PriceTable.from_json(value)  # raises ValueError with the entry at fault
        return value

    @property
    def prices(self) -> PriceTable:
        return PriceTable.from_json(self.model_prices_json)

    @property
    def uses_openai_endpoint(self) -> bool:
        return not self.base_url or self.base_url.rstrip("/") == OPENAI_DEFAULT_BASE_URL

    @property
    def token_parameter(self) -> str:
        """The request field that carries the completion token limit.

        OpenAI's own endpoint wants `max_completion_tokens` (reasoning models reject
        `max_tokens`); OpenAI-compatible servers such as llama.cpp only honour
        `max_tokens`.
        """
        if self.token_limit_parameter != "auto":  # noqa: S105 - a parameter name, not a secret
            return self.token_limit_parameter
        return "max_completion_tokens" if self.uses_openai_endpoint else "max_tokens"


class ConfigurationError(RuntimeError):
    """The function's environment is wrong; raised at cold start."""


def _load(environ: dict[str, str]) -> Settings:
    values = {key: value for key, value in environ.items() if value != ""}
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The container's settings, read once. Tests call `get_settings.cache_clear()`."""
    return _load(dict(os.environ))
