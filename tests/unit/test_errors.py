"""The error table: SDK and AWS exceptions become our errors, by type."""

from __future__ import annotations

import httpx2
import openai
import pytest
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from lambda_chat import errors

REQUEST = httpx2.Request("POST", "https://api.openai.com/v1/chat/completions")


def status_error(status: int, body: object = None, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    client = openai.OpenAI(api_key="k")
    response = httpx2.Response(status, request=REQUEST, headers=headers or {})
    error = body.get("error", body) if isinstance(body, dict) else body
    return client._make_status_error(
        f"Error code: {status}", body=error if error is not None else body, response=response
    )


def openai_body(message: str, code: str | None = None, param: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": "x", "code": code, "param": param}}


@pytest.mark.parametrize(
    ("exc", "kind", "status"),
    [
        (status_error(400, openai_body("too long", "context_length_exceeded")), errors.UpstreamRejectedRequest, 400),
        (status_error(404, openai_body("no such model", "model_not_found")), errors.UpstreamRejectedRequest, 400),
        (status_error(422, openai_body("unprocessable")), errors.UpstreamRejectedRequest, 400),
        (status_error(401, openai_body("Incorrect API key provided")), errors.UpstreamKeyRejected, 502),
        (status_error(403, openai_body("region not supported")), errors.UpstreamAuthRejected, 502),
        (status_error(409, openai_body("conflict")), errors.UpstreamUnavailable, 502),
        (status_error(429, openai_body("slow down", "rate_limit_exceeded")), errors.UpstreamRateLimited, 429),
        (status_error(429, openai_body("pay up", "insufficient_quota")), errors.UpstreamAuthRejected, 502),
        (status_error(500, openai_body("oops")), errors.UpstreamUnavailable, 502),
        (status_error(503, "<html>busy</html>"), errors.UpstreamUnavailable, 502),
        (openai.APITimeoutError(REQUEST), errors.DeadlineExceeded, 504),
        (openai.APIConnectionError(request=REQUEST), errors.UpstreamMalformed, 502),
        (openai.OpenAIError("other"), errors.UpstreamUnavailable, 502),
    ],
)
def test_openai_exceptions_map_by_type(exc: openai.OpenAIError, kind: type[errors.ChatError], status: int) -> None:
    translated = errors.from_openai(exc)
    assert type(translated) is kind
    assert translated.status == status


def test_a_connect_failure_is_retryable_but_a_broken_answer_is_not() -> None:
    refused = openai.APIConnectionError(request=REQUEST)
    refused.__cause__ = httpx2.ConnectError("refused")
    broken = openai.APIConnectionError(request=REQUEST)
    broken.__cause__ = httpx2.RemoteProtocolError("peer closed")
    assert errors.from_openai(refused).retry_within_call is True
    assert errors.from_openai(broken).retry_within_call is False


def test_openais_own_message_is_kept_and_retry_after_passed_on() -> None:
    exc = status_error(429, openai_body("Rate limit reached for gpt-4o-mini"), headers={"retry-after": "7"})
    translated = errors.from_openai(exc)
    assert translated.message == "OpenAI rate limit reached: Rate limit reached for gpt-4o-mini"
    assert translated.retry_after == "7"


def test_a_huge_upstream_message_is_shortened() -> None:
    translated = errors.from_openai(status_error(400, openai_body("x" * 5000)))
    assert len(translated.message) < 600


def test_the_structured_param_and_code_are_kept_for_adaptation() -> None:
    translated = errors.from_openai(status_error(400, openai_body("no", "unsupported_value", "temperature")))
    assert isinstance(translated, errors.UpstreamRejectedRequest)
    assert (translated.param, translated.code) == ("temperature", "unsupported_value")


def wrapped(cause: Exception) -> GetParameterError:
    try:
        try:
            raise cause
        except Exception as exc:
            raise GetParameterError(str(exc))  # noqa: B904 - as Powertools does
    except GetParameterError as outer:
        return outer


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "arn:aws:secretsmanager:...:secret:k"}}, "GetSecretValue")


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (client_error("ResourceNotFoundException"), "the secret does not exist"),
        (client_error("AccessDeniedException"), "not allowed to read the secret"),
        (client_error("ThrottlingException"), "throttled"),
        (client_error("DecryptionFailure"), "could not be decrypted"),
        (client_error("SomethingNew"), "the read failed"),
        (NoCredentialsError(), "no AWS credentials"),
        (EndpointConnectionError(endpoint_url="http://x"), "could not be reached"),
    ],
)
def test_secret_read_failures_explain_without_details(cause: Exception, reason: str) -> None:
    translated = errors.from_secret_read(wrapped(cause))
    assert translated.status == 500
    assert reason in translated.message
    assert "arn:" not in translated.message
