"""The status table, end to end: each upstream or Secrets Manager fault becomes the right envelope."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.support.events import load_event
from tests.support.fake_openai import Reply
from tests.support.rest_calls import api_request, call
from tests.support.stack import API_KEY, Stack


def assert_failure(envelope: dict[str, Any]) -> None:
    assert envelope["success"] is False
    assert envelope["completion"] is None and envelope["usage"] is None and envelope["finish_reason"] is None
    assert isinstance(envelope["error"], str) and envelope["error"]


UPSTREAM_FAULTS = [
    pytest.param(
        Reply.error(400, "This model's maximum context length is 128000 tokens.", code="context_length_exceeded"),
        400,
        "maximum context length",
        id="400-context-too-long",
    ),
    pytest.param(
        Reply.error(404, "The model `gpt-nope` does not exist", code="model_not_found"),
        400,
        "does not exist",
        id="404-unknown-model",
    ),
    pytest.param(Reply.error(403, "Project does not have access to model"), 502, "denied", id="403"),
    pytest.param(Reply.error(429, "Rate limit reached", code="insufficient_quota"), 502, "quota", id="429-quota"),
    pytest.param(Reply(action="raw", body=b"<html>bad gateway</html>"), 502, "not JSON", id="non-json-body"),
    pytest.param(Reply(body={"id": "x", "object": "chat.completion"}), 502, "without choices", id="no-choices"),
    pytest.param(Reply(body={"choices": []}), 502, "without choices", id="empty-choices"),
    pytest.param(
        Reply(action="truncate", body={"choices": [{"message": {"content": "x" * 200}}]}),
        502,
        "before its answer was complete",
        id="truncated-body",
    ),
    pytest.param(Reply(action="reset"), 502, "before its answer was complete", id="reset-after-request"),
]


@pytest.mark.parametrize(("reply", "status", "message"), UPSTREAM_FAULTS)
def test_upstream_faults_that_are_not_retried(stack: Stack, reply: Reply, status: int, message: str) -> None:
    # Given OpenAI answers with a fault
    stack.openai.script(reply)
    # When a request arrives through API Gateway
    code, envelope, _ = call(stack)
    # Then the status and message say what happened, after one upstream call
    assert code == status
    assert_failure(envelope)
    assert message in envelope["error"]
    assert len(stack.openai.received) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_upstream_5xx_is_retried_then_answered_502(stack: Stack, status: int) -> None:
    # Given OpenAI keeps failing with a server error
    stack.openai.script(*[Reply.error(status, "The server had an error")] * 3)
    # When a request arrives
    code, envelope, _ = call(stack)
    # Then every allowed attempt is used, and the caller gets 502
    assert code == 502
    assert_failure(envelope)
    assert str(status) in envelope["error"]
    assert len(stack.openai.received) == 3


def test_a_transient_5xx_is_absorbed_by_a_retry(stack: Stack) -> None:
    # Given OpenAI fails once, then recovers
    stack.openai.script(Reply.error(503, "Overloaded"))
    # When a request arrives
    code, envelope, _ = call(stack)
    # Then the caller sees only the success
    assert code == 200 and envelope["success"] is True
    assert len(stack.openai.received) == 2


def test_rate_limit_with_a_long_retry_after_is_passed_on(stack: Stack) -> None:
    # Given OpenAI rate-limits and asks for more time than the deadline leaves
    stack.openai.script(Reply.error(429, "Rate limit reached for requests", headers={"Retry-After": "120"}))
    # When a request arrives
    code, envelope, headers = call(stack)
    # Then the caller gets 429 with OpenAI's Retry-After, without a pointless retry
    assert code == 429
    assert_failure(envelope)
    assert headers["Retry-After"] == "120"
    assert len(stack.openai.received) == 1


def test_rate_limit_with_a_short_retry_after_is_waited_out(stack: Stack) -> None:
    # Given OpenAI rate-limits once for a fraction of a second
    stack.openai.script(Reply.error(429, "Rate limit reached", headers={"Retry-After": "0.2"}))
    # When a request arrives
    started = time.monotonic()
    code, envelope, _ = call(stack)
    # Then the function waits as asked and succeeds
    assert code == 200 and envelope["success"] is True
    assert time.monotonic() - started >= 0.2
    assert len(stack.openai.received) == 2


def test_connection_refused_is_retried_then_502(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given nothing listens where OpenAI should be
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    attempts: list[float] = []
    monkeypatch.setattr("lambda_chat.completion.time.sleep", attempts.append)
    # When a request arrives
    code, envelope, _ = call(stack)
    # Then each allowed attempt was made (nothing was sent, so nothing can be billed twice), then 502
    assert code == 502
    assert_failure(envelope)
    assert envelope["error"] == "could not connect to OpenAI"
    assert len(attempts) == 2


def test_a_hanging_upstream_answers_504_before_the_lambda_deadline(stack: Stack) -> None:
    # Given OpenAI never answers, and the invocation has 6 s left
    stack.openai.script(Reply(action="hang", seconds=8))
    # When a request arrives
    started = time.monotonic()
    code, envelope, _ = call(stack, timeout_ms=6000)
    elapsed = time.monotonic() - started
    # Then the caller gets 504 before Lambda would have killed the function
    assert code == 504
    assert_failure(envelope)
    assert elapsed < 6.0


def test_a_slow_first_byte_within_the_deadline_still_succeeds(stack: Stack) -> None:
    # Given OpenAI takes a second before answering
    stack.openai.script(
        Reply(seconds=1.0, body={"choices": [{"message": {"content": "late"}, "finish_reason": "stop"}]})
    )
    # When a request arrives with time to spare
    code, envelope, _ = call(stack, timeout_ms=10_000)
    # Then it succeeds, with null usage because none was sent
    assert code == 200
    assert envelope["completion"] == "late" and envelope["usage"] is None


def test_a_length_stop_is_reported(stack: Stack) -> None:
    # Given a tiny token limit
    code, envelope, _ = call(stack, {"prompt": "count to ten", "max_tokens": 2})
    # Then the completion says it was cut short, with OpenAI's usage figures
    assert code == 200
    assert envelope["finish_reason"] == "length"
    assert envelope["usage"]["completion_tokens"] == 2
    assert stack.openai.received[-1].json["max_tokens"] == 2


def test_the_deployments_default_model_and_defaults_are_sent(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a deployment whose default model is configured
    monkeypatch.setenv("DEFAULT_MODEL", "gpt-4.1-mini")
    # When a request names no model, temperature or token limit
    call(stack, {"prompt": "hi", "system_message": "be brief"})
    # Then OpenAI gets the configured model, the default temperature and token limit, and the system message
    sent = stack.openai.received[-1].json
    assert sent["model"] == "gpt-4.1-mini"
    assert sent["temperature"] == 0.7 and sent["max_tokens"] == 1000
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


def test_a_model_outside_the_allowlist_is_refused(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_MODELS", "gpt-4o-mini, gpt-4.1-mini")
    code, envelope, _ = call(stack, {"prompt": "hi", "model": "gpt-4o"})
    assert code == 400
    assert "model" in envelope["error"] and "gpt-4.1-mini" in envelope["error"]
    assert stack.openai.received == []


def test_an_oversized_body_is_413_before_parsing(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "1000")
    event = api_request({"prompt": "x" * 2000})
    response = stack.invoke(event)
    assert response["statusCode"] == 413
    assert "1000 bytes" in json.loads(response["body"])["error"]


def test_a_non_post_function_url_request_is_405(stack: Stack) -> None:
    event = load_event("function-url.json")
    event["requestContext"]["http"]["method"] = "GET"
    response = stack.invoke(event)
    assert response["statusCode"] == 405 and response["headers"]["Allow"] == "POST"


# --- the key -----------------------------------------------------------------------------------


def test_the_secret_is_read_once_across_many_calls(stack: Stack) -> None:
    # Given a warm container
    # When fifty requests arrive
    statuses = {call(stack, {"prompt": "hi"})[0] for _ in range(50)}
    # Then all succeed and Secrets Manager was read once
    assert statuses == {200}
    assert stack.secret_reads == [stack.secret_id]


def test_a_rotated_key_is_picked_up_within_the_same_call(stack: Stack) -> None:
    # Given a warm container that cached the old key
    assert call(stack, {"prompt": "hi"})[0] == 200
    # And the key is rotated in Secrets Manager and at OpenAI
    stack.put_key("sk-rotated-0000")
    stack.openai.required_key = "sk-rotated-0000"
    # When the next request arrives
    code, envelope, _ = call(stack, {"prompt": "hi"})
    # Then OpenAI's 401 makes the function re-read the secret and retry, in the same call
    assert code == 200 and envelope["success"] is True
    assert len(stack.secret_reads) == 2
    assert [r.headers["authorization"] for r in stack.openai.received[-2:]] == [
        f"Bearer {API_KEY}",
        "Bearer sk-rotated-0000",
    ]


def test_a_key_openai_rejects_is_502_with_openais_message(stack: Stack) -> None:
    # Given the secret holds a key OpenAI does not accept, even after a re-read
    stack.openai.required_key = "sk-something-else"
    # When a request arrives
    code, envelope, _ = call(stack)
    # Then the caller gets 502 saying the function's key was refused, with nothing of the key (OpenAI's words quote
    # its last characters, so they are not passed on)
    assert code == 502
    assert "rejected the function's API key" in envelope["error"]
    assert API_KEY not in envelope["error"] and "sk-" not in envelope["error"]
    assert len(stack.secret_reads) == 2


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        pytest.param('{"OPENAI_API_KEY": "' + API_KEY + '"}', None, id="json-with-field"),
        pytest.param(f"  {API_KEY}\n", None, id="plain-with-whitespace"),
        pytest.param('{"api_key": "sk-x"}', "without a non-empty OPENAI_API_KEY", id="json-without-field"),
        pytest.param(" ", "empty", id="blank"),
    ],
)
def test_secret_formats(stack: Stack, secret: str, message: str | None) -> None:
    # Given the secret in one of its forms
    stack.put_key(secret)
    # When a request arrives
    code, envelope, _ = call(stack)
    # Then the key is found, or the caller gets a 500 that explains without revealing
    if message is None:
        assert code == 200
    else:
        assert code == 500 and message in envelope["error"]
        assert stack.openai.received == []


def test_a_binary_secret_is_500(stack: Stack) -> None:
    stack.moto.secrets_client().put_secret_value(SecretId=stack.secret_id, SecretBinary=b"\x00\x01")
    code, envelope, _ = call(stack)
    assert code == 500 and "binary" in envelope["error"]


def test_a_missing_secret_is_500_saying_so(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY_SECRET_ID", "lambda-chat/does-not-exist")
    code, envelope, _ = call(stack)
    assert code == 500
    assert envelope["error"] == "could not read the OpenAI API key from Secrets Manager: the secret does not exist"


def test_an_unreachable_secrets_manager_is_500(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    code, envelope, _ = call(stack)
    assert code == 500
    assert "Secrets Manager could not be reached" in envelope["error"]


def test_init_reads_no_secret_so_a_snapstart_snapshot_holds_none(stack: Stack) -> None:
    # Given a container whose init has run (settings, OpenAI client, idempotency store built)
    from lambda_chat.wiring import service_for

    service_for("handler").warm()
    # Then nothing was read from Secrets Manager and nothing was sent to OpenAI yet
    assert stack.secret_reads == []
    assert stack.openai.received == []
    # And the first request reads the key
    assert call(stack, {"prompt": "hi"})[0] == 200
    assert stack.secret_reads == [stack.secret_id]
