"""The OpenAI caller, with the HTTP layer faked by httpx2.MockTransport (no network)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from lambda_chat import completion
from lambda_chat.answers import Answer, read_answer
from lambda_chat.completion import OpenAICaller, parse_retry_after
from lambda_chat.deadline import Deadline
from lambda_chat.errors import (
    DeadlineExceeded,
    UpstreamKeyRejected,
    UpstreamMalformed,
    UpstreamRateLimited,
    UpstreamRejectedRequest,
    UpstreamUnavailable,
)
from lambda_chat.models import ChatRequest, UpstreamRequest
from lambda_chat.runners import drive
from lambda_chat.settings import Settings

SETTINGS = Settings(OPENAI_API_KEY_SECRET_ID="s")

OK = {
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 15, "completion_tokens": 150, "total_tokens": 165},
}


class Keys:
    def __init__(self, *values: str) -> None:
        self.values = list(values)
        self.reads = 0

    def get(self) -> str:
        self.reads += 1
        return self.values[0]

    def refresh(self) -> str:
        self.reads += 1
        self.values.pop(0)
        return self.values[0]

    def cached(self) -> str | None:
        return None  # every call reads through get(), and is counted


Responder = Callable[[httpx2.Request], httpx2.Response]


def completer(responses: list[Any], keys: Keys | None = None, **options: Any) -> tuple[Blocking, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    def respond(request: httpx2.Request) -> httpx2.Response:
        sent.append({"json": json.loads(request.content), "auth": request.headers.get("authorization")})
        answer = responses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body, *headers = answer
        return httpx2.Response(status, json=body, headers=headers[0] if headers else {})

    client = openai.OpenAI(
        api_key=completion.PLACEHOLDER_KEY,
        base_url="http://upstream.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(respond)),
    )
    settings = {"token_parameter": "max_tokens", "max_attempts": 3, **options}
    return Blocking(OpenAICaller(client, keys or Keys("sk-one"), **settings)), sent


class Blocking:
    """The caller as the handler function drives it: inline, with the blocking SDK client."""

    def __init__(self, caller: OpenAICaller) -> None:
        self.caller = caller

    def complete(self, request: UpstreamRequest, deadline: Deadline) -> Answer:
        return drive(self.caller.complete(request, deadline))


def request(**fields: Any) -> UpstreamRequest:
    return ChatRequest.model_validate({"prompt": "hi", **fields}).to_upstream(SETTINGS)


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    pauses: list[float] = []
    monkeypatch.setattr(completion.time, "sleep", pauses.append)
    return pauses


def error(message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code, "param": param}}


def test_a_completion_is_read_from_the_body() -> None:
    chat, sent = completer([(200, OK)])
    result = chat.complete(request(), Deadline(10_000))
    report = result.report
    assert (result.text, report.finish_reason, report.model) == ("Hello!", "stop", "gpt-4o-mini-2024-07-18")
    assert result.report.usage == {"prompt_tokens": 15, "completion_tokens": 150, "total_tokens": 165}
    assert sent[0]["auth"] == "Bearer sk-one"


def test_defaults_and_the_configured_token_parameter_are_sent() -> None:
    chat, sent = completer([(200, OK), (200, OK)], token_parameter="max_completion_tokens")
    chat.complete(request(), Deadline(10_000))
    chat.complete(request(model="gpt-4.1", temperature=0, max_tokens=5), Deadline(10_000))
    assert sent[0]["json"] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.7,
        "max_completion_tokens": 1000,
    }
    assert (sent[1]["json"]["model"], sent[1]["json"]["temperature"], sent[1]["json"]["max_completion_tokens"]) == (
        "gpt-4.1",
        0,
        5,
    )


def test_a_401_re_reads_the_key_once_and_retries() -> None:
    keys = Keys("sk-old", "sk-new")
    chat, sent = completer([(401, error("Incorrect API key provided")), (200, OK)], keys)
    assert chat.complete(request(), Deadline(10_000)).text == "Hello!"
    assert [s["auth"] for s in sent] == ["Bearer sk-old", "Bearer sk-new"]


def test_a_second_401_is_final() -> None:
    chat, sent = completer([(401, error("bad key"))] * 2, Keys("sk-a", "sk-b"))
    with pytest.raises(UpstreamKeyRejected):
        chat.complete(request(), Deadline(10_000))
    assert len(sent) == 2


def test_5xx_is_retried_with_growing_backoff(no_sleeping: list[float]) -> None:
    chat, sent = completer([(500, error("x")), (502, error("x")), (200, OK)])
    assert chat.complete(request(), Deadline(10_000)).text == "Hello!"
    assert len(sent) == 3
    assert 0.125 <= no_sleeping[0] <= 0.25 and 0.25 <= no_sleeping[1] <= 0.5


def test_attempts_are_capped() -> None:
    chat, sent = completer([(503, error("x"))] * 5, max_attempts=2)
    with pytest.raises(UpstreamUnavailable):
        chat.complete(request(), Deadline(10_000))
    assert len(sent) == 2


def test_no_retry_when_the_backoff_does_not_fit_the_deadline() -> None:
    chat, sent = completer([(503, error("x"))] * 3)
    with pytest.raises(UpstreamUnavailable):
        chat.complete(request(), Deadline(150))
    assert len(sent) == 1


def test_retry_after_is_honoured_when_it_fits(no_sleeping: list[float]) -> None:
    chat, _ = completer([(429, error("slow"), {"retry-after": "2"}), (200, OK)])
    chat.complete(request(), Deadline(10_000))
    assert no_sleeping == [2.0]


def test_retry_after_beyond_the_deadline_is_passed_to_the_caller() -> None:
    chat, sent = completer([(429, error("slow"), {"retry-after": "30"})])
    with pytest.raises(UpstreamRateLimited) as caught:
        chat.complete(request(), Deadline(10_000))
    assert caught.value.retry_after == "30" and len(sent) == 1


def test_an_expired_deadline_sends_nothing() -> None:
    chat, sent = completer([])
    with pytest.raises(DeadlineExceeded):
        chat.complete(request(), Deadline(0))
    assert sent == []


def test_a_timeout_is_a_deadline_error() -> None:
    chat, _ = completer([httpx2.ReadTimeout("slow")])
    with pytest.raises(DeadlineExceeded):
        chat.complete(request(), Deadline(10_000))


def test_a_rejected_default_temperature_is_dropped_and_remembered_per_model() -> None:
    rejected = (400, error("Unsupported value", "unsupported_value", "temperature"))
    chat, sent = completer([rejected, (200, OK), (200, OK), (200, OK)])
    chat.complete(request(model="o3"), Deadline(10_000))
    chat.complete(request(model="o3"), Deadline(10_000))
    chat.complete(request(model="gpt-4o"), Deadline(10_000))
    assert ["temperature" in s["json"] for s in sent] == [True, False, False, True]


def test_both_token_parameters_rejected_is_the_final_answer() -> None:
    chat, sent = completer(
        [
            (400, error("no", "unsupported_parameter", "max_tokens")),
            (400, error("no", "unsupported_parameter", "max_completion_tokens")),
        ]
    )
    with pytest.raises(UpstreamRejectedRequest):
        chat.complete(request(), Deadline(10_000))
    assert len(sent) == 2


def test_an_unrelated_400_is_not_retried() -> None:
    chat, sent = completer([(400, error("context too long", "context_length_exceeded", "messages"))])
    with pytest.raises(UpstreamRejectedRequest):
        chat.complete(request(), Deadline(10_000))
    assert len(sent) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"choices": []}',
        b'{"choices": ["x"]}',
        b'{"choices": [{"message": {"content": 5}}]}',
    ],
)
def test_unreadable_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(UpstreamMalformed):
        read_answer("chat", body)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (None, None),
        ({"prompt_tokens": 1}, None),
        ({"prompt_tokens": 1, "completion_tokens": True, "total_tokens": 2}, None),
        (
            {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "extra": {}},
            {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        ),
    ],
)
def test_usage_is_kept_only_when_complete(usage: Any, expected: Any) -> None:
    body = {"choices": [{"message": {"content": None}, "finish_reason": "content_filter"}], "usage": usage}
    result = read_answer("chat", json.dumps(body).encode())
    assert result.report.usage == expected
    assert (result.text, result.report.finish_reason) == ("", "content_filter")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("-2", 0.0),
        ("soon", None),
        ("", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_retry_after_values(header: str, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_a_limit_the_function_chose_beyond_what_the_model_writes_is_lowered_for_that_call() -> None:
    # Given an endpoint that says the model writes at most 16 tokens, for a limit the caller did not choose
    too_large = (400, error("max_tokens is too large: 1000. This model supports at most 16 completion tokens, "
                            "whereas you provided 1000.", "invalid_value", "max_tokens"))  # fmt: skip
    chat, sent = completer([too_large, (200, OK), (200, OK)])
    # When it is called, and called again
    chat.complete(request(), Deadline(10_000))
    chat.complete(request(), Deadline(10_000))
    # Then that call was retried with 16, and nothing was learned for the next one (the endpoint said it of this call)
    assert [s["json"]["max_tokens"] for s in sent] == [1000, 16, 1000]


def test_a_callers_own_limit_is_never_lowered_behind_its_back() -> None:
    too_large = (400, error("This model supports at most 16 completion tokens", "invalid_value", "max_tokens"))
    chat, sent = completer([too_large])
    with pytest.raises(UpstreamRejectedRequest):
        chat.complete(request(max_tokens=500), Deadline(10_000))
    assert len(sent) == 1
