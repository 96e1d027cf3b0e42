"""Configuration from the environment, and the time budget of an invocation."""

from __future__ import annotations

import pytest

from lambda_chat.deadline import Deadline
from lambda_chat.settings import ConfigurationError, Settings, _load, get_settings
from local.context import FakeLambdaContext


def test_defaults() -> None:
    settings = _load({"OPENAI_API_KEY_SECRET_ID": "arn:aws:secretsmanager:us-east-1:1:secret:k"})
    assert settings.default_model == "gpt-4o-mini"
    assert settings.allowed_models == ()
    assert settings.secret_max_age_seconds == 300
    assert settings.token_parameter == "max_completion_tokens"


def test_a_custom_base_url_gets_max_tokens_unless_told_otherwise() -> None:
    custom = {"OPENAI_API_KEY_SECRET_ID": "k", "OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"}
    assert _load(custom).token_parameter == "max_tokens"
    assert (
        _load({**custom, "TOKEN_LIMIT_PARAMETER": "max_completion_tokens"}).token_parameter == "max_completion_tokens"
    )
    assert _load({**custom, "OPENAI_BASE_URL": "https://api.openai.com/v1/"}).token_parameter == "max_completion_tokens"


def test_the_allowlist_is_comma_separated() -> None:
    settings = _load({"OPENAI_API_KEY_SECRET_ID": "k", "ALLOWED_MODELS": " gpt-4o-mini, ,gpt-4.1 "})
    assert settings.allowed_models == ("gpt-4o-mini", "gpt-4.1")


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, "OPENAI_API_KEY_SECRET_ID"),
        ({"OPENAI_API_KEY_SECRET_ID": "k", "SECRET_CACHE_TTL_SECONDS": "soon"}, "SECRET_CACHE_TTL_SECONDS"),
        ({"OPENAI_API_KEY_SECRET_ID": "k", "MAX_TOKENS_CEILING": "0"}, "MAX_TOKENS_CEILING"),
        ({"OPENAI_API_KEY_SECRET_ID": "k", "TOKEN_LIMIT_PARAMETER": "tokens"}, "TOKEN_LIMIT_PARAMETER"),
    ],
)
def test_a_bad_configuration_fails_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        _load(environ)


def test_settings_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    monkeypatch.setenv("DEFAULT_MODEL", "other")
    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().default_model == "other"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_deadline_counts_down_and_never_goes_negative() -> None:
    clock = Clock()
    deadline = Deadline(2500, clock)
    assert deadline.remaining() == 2.5
    clock.now += 2
    assert deadline.remaining() == pytest.approx(0.5)
    clock.now += 1
    assert deadline.remaining() == 0 and deadline.expired()


@pytest.mark.parametrize(
    ("remaining_ms", "cap_ms", "expected_s"),
    [
        (6000, None, 5.0),  # Lambda's remaining time less the 1 s margin
        (900_000, 29_000, 28.0),  # API Gateway's 29 s limit, less the margin
        (10_000, 29_000, 9.0),  # the Lambda deadline comes first
        (2000, None, 1.5),  # the margin is at most a quarter of what is left...
        (1000, None, 0.75),  # ...so 1 s left still leaves 750 ms to call OpenAI
        (0, None, 0.0),
    ],
)
def test_the_budget_fits_the_tightest_limit(remaining_ms: int, cap_ms: int | None, expected_s: float) -> None:
    deadline = Deadline.for_invocation(
        FakeLambdaContext(timeout_ms=remaining_ms), safety_margin_ms=1000, fallback_ms=60_000, cap_ms=cap_ms
    )
    assert deadline.remaining() == pytest.approx(expected_s, abs=0.05)


def test_without_a_context_the_local_budget_applies() -> None:
    deadline = Deadline.for_invocation(None, safety_margin_ms=1000, fallback_ms=5000)
    assert deadline.remaining() == pytest.approx(4.0, abs=0.05)


def test_settings_model_is_frozen() -> None:
    settings = Settings(OPENAI_API_KEY_SECRET_ID="k")
    with pytest.raises(ValueError, match="frozen"):
        settings.default_model = "x"  # type: ignore[misc]
