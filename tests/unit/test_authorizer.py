"""The key authorizer: where it finds the caller's key, what it allows, and what it never writes down."""

from __future__ import annotations

import ast
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from lambda_chat import authorizer

KEY = "k3y-Value-0123456789abcdefghij"
API = "arn:aws:execute-api:eu-west-1:123456789012:a1b2c3d4e5"
METHOD_ARN = f"{API}/Prod/POST/v1/chat/completions"


def request(headers: dict[str, Any] | None, method_arn: str = METHOD_ARN) -> dict[str, Any]:
    """A REST API REQUEST authorizer event, as API Gateway sends it (header names as the caller wrote them)."""
    return {
        "type": "REQUEST",
        "methodArn": method_arn,
        "resource": "/v1/{proxy+}",
        "path": "/v1/chat/completions",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in (headers or {}).items()},
        "queryStringParameters": None,
        "requestContext": {"stage": "Prod", "apiId": "a1b2c3d4e5", "httpMethod": "POST"},
    }


def refused(headers: dict[str, Any] | None, method_arn: str = METHOD_ARN) -> Exception:
    with pytest.raises(Exception, match=r"^Unauthorized$") as caught:
        authorizer.handler(request(headers, method_arn), None)
    return caught.value


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer {KEY}"},
        {"AUTHORIZATION": f"BEARER   {KEY}  "},
        {"x-api-key": KEY},
        {"X-API-Key": f" {KEY} "},
    ],
)
def test_the_key_is_read_from_a_bearer_token_or_x_api_key_in_any_case(headers: dict[str, str]) -> None:
    # Given a caller that sends its key one way or the other, with header names and scheme in any case
    # When the authorizer runs
    answer = authorizer.handler(request({"Content-Type": "application/json", **headers}), None)
    # Then API Gateway is told to check exactly that key against the usage plan
    assert answer["usageIdentifierKey"] == KEY


def test_x_api_key_wins_over_a_bearer_token() -> None:
    # Given a client that must send some api_key as Bearer, and the real key in x-api-key
    answer = authorizer.handler(request({"Authorization": "Bearer placeholder", "x-api-key": KEY}), None)
    # Then the key sent on purpose is the one checked
    assert answer["usageIdentifierKey"] == KEY


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"Content-Type": "application/json"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer    "},
        {"Authorization": ""},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
        {"x-api-key": ""},
        {"x-api-key": "   "},
        {"x-api-key": None},
    ],
)
def test_no_usable_key_is_unauthorized(headers: dict[str, Any] | None) -> None:
    # Given a request without a key in either header (or a blank one, or another scheme)
    # When the authorizer runs, Then it raises the one exception API Gateway answers 401 to
    refused(headers)


@pytest.mark.parametrize("method_arn", ["", "not-an-arn", f"{API}", f"{API}/", "arn:aws:lambda:x:1:function/f/Prod"])
def test_a_method_arn_it_cannot_scope_is_unauthorized(method_arn: str) -> None:
    # Given a key but a method ARN with no API and stage in it, When the authorizer runs, Then it allows nothing
    refused({"x-api-key": KEY}, method_arn)


def test_the_policy_allows_every_route_of_this_api_and_stage_only() -> None:
    # Given two requests with the same key on different routes of the same stage
    chat = authorizer.handler(request({"x-api-key": KEY}, f"{API}/Prod/POST/chat"), None)
    models = authorizer.handler(request({"Authorization": f"Bearer {KEY}"}, f"{API}/Prod/GET/v1/models"), None)
    # Then both get the same Allow on this API and stage, with a wildcard after it (so one policy serves any route)
    for answer in (chat, models):
        assert answer["policyDocument"] == {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": f"{API}/Prod/*"}],
        }
    # And another stage gets its own stage, not this one
    other = authorizer.handler(request({"x-api-key": KEY}, f"{API}/Dev/POST/chat"), None)
    assert other["policyDocument"]["Statement"][0]["Resource"] == f"{API}/Dev/*"


def test_the_principal_is_a_digest_of_the_key_never_the_key() -> None:
    # Given the same key twice and another key
    first = authorizer.handler(request({"x-api-key": KEY}), None)["principalId"]
    again = authorizer.handler(request({"Authorization": f"Bearer {KEY}"}), None)["principalId"]
    other = authorizer.handler(request({"x-api-key": KEY + "x"}), None)["principalId"]
    # Then the principal is stable per key, differs between keys, and holds no part of the key
    assert first == again != other
    assert first.startswith("key-") and len(first) == len("key-") + 16
    assert KEY not in first and KEY[:8] not in first


def test_the_key_and_headers_are_never_logged_or_printed(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given every log record captured down to DEBUG, and stdout/stderr captured
    caplog.set_level(logging.DEBUG)
    secret_header = "x-secret-header-value"
    # When the authorizer allows one request and refuses others
    authorizer.handler(request({"Authorization": f"Bearer {KEY}", "X-Other": secret_header}), None)
    refusal = refused({"Authorization": f"Basic {KEY}", "X-Other": secret_header})
    refused({"x-api-key": KEY}, "not-an-arn")
    # Then nothing was written anywhere, and the refusal carries no header value
    printed = capsys.readouterr()
    assert caplog.records == []
    for text in (caplog.text, printed.out, printed.err, str(refusal), repr(refusal.args)):
        assert KEY not in text and secret_header not in text


def test_it_imports_only_the_standard_library() -> None:
    # Given the authorizer's source, When its imports are read, Then each is a standard-library module
    tree = ast.parse(Path(authorizer.__file__).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported, "no imports found: the check would prove nothing"
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported - set(sys.stdlib_module_names)
