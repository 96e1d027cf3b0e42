"""`make smoke` (local/smoke.py): its checks against `make serve`'s app, and its reading of a stack's outputs.

The app runs in this process on loopback (local.serve), calling the fake upstream with the key from moto_server.
The stacks are CloudFormation stacks in moto_server whose outputs point at that app, with an API Gateway key there;
for the wrong-key check, the app is put behind a key check that answers as API Gateway does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# Imported now, so that the function's loggers take the session's stdout, not the capsys of the first test here
import lambda_chat.asgi
import lambda_chat.handler  # noqa: F401
from local import serve, smoke
from local.moto import FAKE_AWS_ENV, MotoServer
from tests.support.fake_openai import Reply
from tests.support.stack import Stack


@pytest.fixture
def root_url(base_url: str) -> str:
    """`make serve`'s root URL: POST /chat and /v1 under it."""
    return base_url.removesuffix("/v1")


@pytest.fixture
def aws_at_moto(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """boto3's CloudFormation and API Gateway clients (as make smoke makes them) pointed at moto_server."""
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDFORMATION", moto_server.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_API_GATEWAY", moto_server.endpoint)
    return moto_server


def create_stack(moto: MotoServer, outputs: dict[str, str]) -> str:
    """A stack in moto_server with these outputs (and one resource that does nothing); returns its name."""
    name = f"lambda-chat-smoke-{uuid.uuid4().hex[:8]}"
    template = {
        "Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    moto.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    return name


def deployed_outputs(moto: MotoServer, root: str) -> tuple[dict[str, str], str]:
    """A lambda-chat stack's outputs for the API at `root`, with a new API key in moto; and that key's value."""
    key = moto.client("apigateway").create_api_key(name=f"smoke-{uuid.uuid4().hex[:8]}", enabled=True)
    outputs = {"ChatApiUrl": f"{root}/chat", "OpenAICompatibleBaseUrl": f"{root}/v1", "ApiKeyId": key["id"]}
    return outputs, key["value"]


def behind_a_key_check(app: Callable[..., Any], key: str) -> Callable[..., Any]:
    """The app as API Gateway fronts it: a request without the key (x-api-key or Bearer) gets 401, a wrong one 403."""

    async def checked(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {name.decode().lower(): value.decode() for name, value in scope.get("headers", [])}
        presented = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        if scope["type"] == "http" and presented != key:
            status = 403 if presented else 401
            await send(
                {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": b'{"message": "Forbidden"}'})
            return
        await app(scope, receive, send)

    return checked


@pytest.fixture
def keyed_root_url(stack: Stack, monkeypatch: pytest.MonkeyPatch, aws_at_moto: MotoServer) -> Iterator[tuple[str, str]]:
    """`make serve`'s app behind an API key check, and the key (created in moto's API Gateway) it takes."""
    key = aws_at_moto.client("apigateway").create_api_key(name=f"smoke-{uuid.uuid4().hex[:8]}", enabled=True)
    monkeypatch.setattr(serve, "local_app", behind_a_key_check(serve.local_app, key["value"]))
    with serve.serving_in_background() as url:
        yield url, key["id"]


def column(printed: str, check: str, name: str) -> str:
    """The cell of one check's line under the column `name`, as main printed the table."""
    header = next(line for line in printed.splitlines() if line.startswith("check "))
    line = next(line for line in printed.splitlines() if line.startswith(check + " "))
    return line[header.index(name) :].split("  ")[0].strip()


def table_results(printed: str) -> dict[str, str]:
    """Each check's result, as main printed the table."""
    return {check: column(printed, check, "result") for check in smoke.NAMES.values()}


def test_against_make_serve_every_check_passes_and_the_key_check_is_not_applicable(
    stack: Stack, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given make serve's app, whose upstream streams each word 50 ms apart
    stack.openai.stream_interval = 0.05
    # When make smoke runs against its URL (make smoke URL=...)
    code = smoke.main(["--url", root_url])
    printed = capsys.readouterr().out
    # Then it exits 0, and the table has one line per check: three ok, the wrong key not applicable (no key check)
    assert code == 0, printed
    assert table_results(printed) == {
        "POST /chat": "ok",
        "POST /v1/chat/completions (stream)": "ok",
        "POST /v1/responses": "ok",
        "GET /v1/models (wrong key)": "n/a",
    }
    assert column(printed, "POST /chat", "status") == "200"
    assert column(printed, "POST /v1/chat/completions (stream)", "chunks") != "-"
    assert "all checks passed" in printed.splitlines()[-1]
    # And it sent three calls upstream, each asking for a few tokens, the response not to be stored
    bodies = {received.path: received.json for received in stack.openai.received}
    assert len(stack.openai.received) == 3
    assert bodies["/v1/chat/completions"]["stream"] is True
    assert bodies["/v1/responses"]["store"] is False
    limits = [body.get("max_tokens") or body.get("max_output_tokens") for body in bodies.values()]
    assert all(limit <= 64 for limit in limits), limits
    assert sum(limits) <= 100


def test_the_stream_row_has_its_timings_and_the_table_its_tokens(stack: Stack, root_url: str) -> None:
    # Given an upstream that streams each word 50 ms apart
    stack.openai.stream_interval = 0.05
    # When the checks run
    rows = smoke.run(smoke.target_from_url(root_url))
    # Then the stream row shows when its first chunk came, how many came, and over how long
    by_name = {row.check: row for row in rows}
    streamed = by_name["POST /v1/chat/completions (stream)"]
    assert (streamed.status, streamed.result) == (200, "ok")
    assert streamed.chunks is not None and streamed.chunks >= 7  # role, 7 words (the fake's natural length), finish
    assert streamed.first_chunk is not None and streamed.first_chunk < streamed.seconds
    assert streamed.spread is not None and streamed.spread >= 0.25  # 6 gaps of 50 ms between the words
    # And every call that ran shows its status, time and tokens (the usage the stream asked for too)
    for name in ("POST /chat", "POST /v1/chat/completions (stream)", "POST /v1/responses"):
        row = by_name[name]
        assert row.status == 200 and row.seconds is not None and row.tokens, row
    # And the table prints them, a header and a line each, with "-" where a figure does not apply
    printed = smoke.render(rows)
    assert len(printed.splitlines()) == 5
    assert [column(printed, "POST /chat", name) for name in ("status", "1st chunk", "chunks", "spread")] == [
        "200",
        "-",
        "-",
        "-",
    ]
    assert column(printed, "POST /v1/chat/completions (stream)", "chunks") == str(streamed.chunks)


def test_a_stream_that_arrives_all_at_once_fails_the_run(
    stack: Stack, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an upstream that sends the whole stream at once (as a buffering proxy would pass it on)
    stack.openai.stream_interval = 0.0
    # When make smoke runs
    code = smoke.main(["--url", root_url])
    printed = capsys.readouterr().out
    # Then the stream's line fails and says why, and the run exits 1
    assert code == 1
    assert table_results(printed)["POST /v1/chat/completions (stream)"] == "FAIL"
    assert "not streamed" in printed
    assert "1 of 4 checks FAILED" in printed


def test_a_failing_route_fails_its_row_and_a_skipped_one_is_reported(
    stack: Stack, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an upstream that refuses its first call (the /chat call), as OpenAI refuses a model it does not have
    stack.openai.stream_interval = 0.05
    stack.openai.script(Reply.error(404, "The model `gpt-4o-mini` does not exist", code="model_not_found"))
    # When make smoke runs with the Responses check left out (SKIP=responses)
    code = smoke.main(["--url", root_url, "--skip", "responses"])
    printed = capsys.readouterr().out
    # Then /chat fails with the status the function answered (400) and its message, the rest pass; it exits 1
    assert code == 1
    assert table_results(printed) == {
        "POST /chat": "FAIL",
        "POST /v1/chat/completions (stream)": "ok",
        "POST /v1/responses": "skipped",
        "GET /v1/models (wrong key)": "n/a",
    }
    assert column(printed, "POST /chat", "status") == "400"
    assert "expected 200" in column(printed, "POST /chat", "detail")
    # And no Responses call was made
    assert [received.path for received in stack.openai.received] == ["/v1/chat/completions"] * 2


def test_an_unreachable_target_fails_every_row_that_calls_it(capsys: pytest.CaptureFixture[str]) -> None:
    # Given nothing listening where the API should be (port 9 on loopback)
    # When make smoke runs against it
    code = smoke.main(["--url", "http://127.0.0.1:9", "--timeout", "2"])
    printed = capsys.readouterr().out
    # Then each call's line fails with the connection error, and the run exits 1
    assert code == 1
    results = table_results(printed)
    assert [results[name] for name in list(smoke.NAMES.values())[:3]] == ["FAIL"] * 3
    assert "ConnectError" in printed


def test_the_outputs_and_the_key_are_read_from_the_stack(aws_at_moto: MotoServer) -> None:
    # Given a deployed stack (in moto's CloudFormation) and its API key (in moto's API Gateway)
    outputs, key_value = deployed_outputs(aws_at_moto, "https://abc123.execute-api.us-east-1.amazonaws.com/Prod")
    name = create_stack(aws_at_moto, {**outputs, "ChatFunctionName": "lambda-chat-ChatFunction"})
    # When make smoke reads it, with boto3's default clients
    target = smoke.target_from_stack(name)
    # Then it has the /chat URL, the /v1 base URL and the key's value (not its id)
    assert target == smoke.Target(
        f"stack {name}",
        "https://abc123.execute-api.us-east-1.amazonaws.com/Prod/chat",
        "https://abc123.execute-api.us-east-1.amazonaws.com/Prod/v1",
        key_value,
    )
    # And a key given (SMOKE_API_KEY) is used instead of reading API Gateway
    assert smoke.target_from_stack(name, api_key="given").api_key == "given"


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        (None, "cannot read stack"),
        ({"ChatApiUrl": "https://x/Prod/chat"}, "has no output OpenAICompatibleBaseUrl, ApiKeyId"),
        (
            {"ChatApiUrl": "https://x/Prod/chat", "OpenAICompatibleBaseUrl": "https://x/Prod/v1", "ApiKeyId": "nokey"},
            "cannot read the value of API key nokey",
        ),
    ],
    ids=["no such stack", "not a lambda-chat stack", "no such key"],
)
def test_a_stack_that_cannot_be_read_stops_make_smoke_with_the_reason(
    aws_at_moto: MotoServer, capsys: pytest.CaptureFixture[str], outputs: dict[str, str] | None, message: str
) -> None:
    # Given a stack that does not exist, lacks the outputs, or names a key API Gateway does not have
    name = "no-such-stack" if outputs is None else create_stack(aws_at_moto, outputs)
    # When make smoke is pointed at it
    code = smoke.main(["--stack", name])
    # Then it calls nothing, says why on stderr, and exits 2
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert captured.out == ""


def test_against_a_stack_behind_a_key_check_every_check_passes(
    stack: Stack, keyed_root_url: tuple[str, str], aws_at_moto: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stack whose outputs point at the app behind an API key check, and the key's id
    stack.openai.stream_interval = 0.05
    root, key_id = keyed_root_url
    name = create_stack(
        aws_at_moto, {"ChatApiUrl": f"{root}/chat", "OpenAICompatibleBaseUrl": f"{root}/v1", "ApiKeyId": key_id}
    )
    # When make smoke STACK=<name> runs
    code = smoke.main(["--stack", name])
    printed = capsys.readouterr().out
    # Then every call with the stack's key passes, and the wrong key was refused (403)
    assert code == 0, printed
    assert set(table_results(printed).values()) == {"ok"}
    assert column(printed, "GET /v1/models (wrong key)", "status") == "403"


def test_a_stack_that_lets_a_wrong_key_in_fails_the_run(
    stack: Stack, root_url: str, aws_at_moto: MotoServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stack whose API checks no key (its outputs point at make serve's app, which checks none)
    stack.openai.stream_interval = 0.05
    outputs, _ = deployed_outputs(aws_at_moto, root_url)
    name = create_stack(aws_at_moto, outputs)
    # When make smoke STACK=<name> runs
    code = smoke.main(["--stack", name])
    printed = capsys.readouterr().out
    # Then the wrong key's line fails (it was answered 200), and the run exits 1
    assert code == 1
    assert table_results(printed)["GET /v1/models (wrong key)"] == "FAIL"
    assert "a wrong key was not refused" in printed
