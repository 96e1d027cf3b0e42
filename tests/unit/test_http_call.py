"""The streaming app's HTTP edge, with ASGI's receive and send faked over lists (no server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from lambda_chat import asgi
from lambda_chat.asgi import ClientGone, HttpCall
from lambda_chat.errors import PayloadTooLarge

Message = dict[str, Any]
Headers = tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]]


class Wire:
    """What the client sends (popped in order; once empty, receive waits forever) and what the app sent."""

    def __init__(self, *incoming: Message) -> None:
        self.incoming = list(incoming)
        self.sent: list[Message] = []
        self.received = 0

    async def receive(self) -> Message:
        if not self.incoming:
            await asyncio.Event().wait()  # the client says nothing more
        self.received += 1
        return self.incoming.pop(0)

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def call(self, headers: Headers = (), method: str = "POST", path: str = "/") -> HttpCall:
        return HttpCall(scope(method, path, headers), self.receive, self.send, {})

    @property
    def bodies(self) -> list[Message]:
        return [message for message in self.sent if message["type"] == "http.response.body"]


def scope(method: str, path: str, headers: Headers = ()) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": list(headers), "query_string": b""}


def chunk(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


def context_header(document: object) -> tuple[bytes, bytes]:
    return (b"x-amzn-request-context", json.dumps(document).encode())


def test_body_joins_its_chunks() -> None:
    # Given a body that arrives in three chunks
    wire = Wire(chunk(b'{"a"', True), chunk(b":", True), chunk(b"1}", False))

    # When it is read
    body = asyncio.run(wire.call().body(100))

    # Then it is whole
    assert body == b'{"a":1}'


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    # Given a request that declares a body larger than accepted
    wire = Wire(chunk(b"x" * 10, False))
    call = wire.call([(b"content-length", b"101")])

    # When its body is read, Then it is refused as too large, and nothing was received
    with pytest.raises(PayloadTooLarge):
        asyncio.run(call.body(100))
    assert wire.received == 0


def test_a_streamed_body_is_refused_once_it_passes_the_limit() -> None:
    # Given a body with no declared length, larger than accepted
    wire = Wire(chunk(b"x" * 60, True), chunk(b"x" * 60, True), chunk(b"x" * 60, False))

    # When it is read, Then it is refused as soon as it passes the limit, without reading the rest
    with pytest.raises(PayloadTooLarge):
        asyncio.run(wire.call().body(100))
    assert wire.received == 2


def test_a_body_at_the_limit_is_accepted() -> None:
    # Given a body of exactly the limit, declared
    wire = Wire(chunk(b"x" * 100, False))

    # When it is read, Then it is whole
    assert asyncio.run(wire.call([(b"content-length", b"100")]).body(100)) == b"x" * 100


def test_a_declared_length_that_is_not_a_number_is_not_trusted() -> None:
    # Given a Content-Length that str.isdigit() accepts but is no number ("²", latin-1 0xB2)
    wire = Wire(chunk(b"{}", False))
    call = wire.call([(b"content-length", b"\xb2")])

    # When the body is read, Then the declared length is ignored and the body is read under the limit
    assert asyncio.run(call.body(100)) == b"{}"


def test_a_disconnect_while_reading_the_body_is_client_gone() -> None:
    # Given a client that leaves mid-body
    wire = Wire(chunk(b"{", True), {"type": "http.disconnect"})

    # When the body is read, Then the caller is known to be gone
    with pytest.raises(ClientGone):
        asyncio.run(wire.call().body(100))


def test_answer_sends_start_then_body_with_lowercased_latin1_headers() -> None:
    # Given a call
    wire = Wire()

    # When it is answered
    asyncio.run(wire.call().answer(201, b"{}", {"Content-Type": "application/json", "X-Note": "café"}))

    # Then the start carries the status and the headers, lowercased and latin-1 encoded, then the body
    assert wire.sent == [
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"application/json"), (b"x-note", "café".encode("latin-1"))],
        },
        {"type": "http.response.body", "body": b"{}"},
    ]


def test_stream_writes_each_frame_then_an_empty_final_body() -> None:
    # Given frames to stream, and a client that stays
    wire = Wire()

    async def frames() -> AsyncGenerator[bytes, None]:
        for frame in (b"data: 1\n\n", b"data: 2\n\n"):
            yield frame

    # When they are streamed
    asyncio.run(asyncio.wait_for(wire.call().stream(frames(), {"Content-Type": "text/event-stream"}), 5))

    # Then the start, each frame with more to come, and an empty final body were sent
    assert wire.sent[0] == {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/event-stream")],
    }
    assert wire.bodies == [
        {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True},
        {"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True},
        {"type": "http.response.body", "body": b""},
    ]


def test_a_disconnect_mid_stream_cancels_the_frames_producer_and_returns() -> None:
    # Given a producer that sends one frame and then waits, and a client that leaves after the first frame
    cleaned_up: list[str] = []
    first_sent = asyncio.Event()
    wire = Wire()

    async def frames() -> AsyncGenerator[bytes, None]:
        try:
            yield b"data: 1\n\n"
            await asyncio.sleep(30)
            yield b"data: 2\n\n"
        finally:
            cleaned_up.append("producer")

    async def send(message: Message) -> None:
        wire.sent.append(message)
        if message.get("body"):
            first_sent.set()

    async def receive() -> Message:
        await first_sent.wait()
        return {"type": "http.disconnect"}

    # When the frames are streamed
    call = HttpCall(scope("POST", "/v1/chat/completions"), receive, send, {})
    asyncio.run(asyncio.wait_for(call.stream(frames(), {}), 5))

    # Then the stream returned without raising, at once; the producer's clean-up ran; nothing more was written
    assert cleaned_up == ["producer"]
    assert [message.get("body") for message in wire.bodies] == [b"data: 1\n\n"]


def test_header_finds_a_header_by_its_lowercase_name() -> None:
    # Given a request with headers
    call = Wire().call([(b"x-one", b"1"), (b"x-two", "é".encode("latin-1"))])

    # When headers are read, Then each is found by name, as latin-1 text; a missing one is None
    assert (call.header("x-one"), call.header("x-two"), call.header("x-three")) == ("1", "é", None)
    assert call.headers() == {"x-one": "1", "x-two": "é"}


@pytest.mark.parametrize(
    "value",
    [b"{not json", b"[" * 100_000 + b"]" * 100_000, b"[1, 2]", b'"text"', b"null", b"7"],
    ids=["bad", "nested-past-the-parser", "list", "string", "null", "number"],
)
def test_header_json_that_is_not_a_json_object_is_empty(value: bytes) -> None:
    # Given a header whose value is not a JSON object
    call = Wire().call([(b"x-amzn-lambda-context", value)])

    # When it is read as JSON, Then it is an empty object
    assert call.header_json("x-amzn-lambda-context") == {}


def test_header_json_reads_an_object() -> None:
    # Given a header holding a JSON object
    call = Wire().call([(b"x-amzn-lambda-context", b'{"deadline": 5}')])

    # When it is read, Then it is that object; a missing header is an empty one
    assert call.header_json("x-amzn-lambda-context") == {"deadline": 5}
    assert call.header_json("x-missing") == {}


def test_the_caller_is_the_api_keys_id_never_the_key() -> None:
    # Given API Gateway's request context, with both the key's id and the key itself
    identity = {"apiKeyId": "key-id-1", "apiKey": "the-secret-key"}
    call = Wire().call([context_header({"requestId": "req-1", "identity": identity})])

    # When the caller is read, Then it is the key's id; the request id is API Gateway's
    assert call.caller == "key-id-1"
    assert call.request_id == "req-1"


def test_a_context_with_only_the_key_does_not_make_the_key_the_caller() -> None:
    # Given a request context that carries the key but not its id
    call = Wire().call([context_header({"identity": {"apiKey": "the-secret-key"}})])

    # When the caller is read, Then it is the trigger's kind, never the key
    assert call.caller == asgi.TRIGGER


def test_the_authorizers_principal_is_the_caller_without_a_key_id() -> None:
    # Given a request context from a Lambda authorizer
    call = Wire().call([context_header({"identity": {"apiKeyId": None}, "authorizer": {"principalId": "p-1"}})])

    # When the caller is read, Then it is the authorizer's principal
    assert call.caller == "p-1"


def test_without_a_request_context_the_request_id_is_made_up() -> None:
    # Given no request context
    call = Wire().call()

    # When the request id is read, Then one is made, and the caller is the trigger's kind
    assert call.request_id
    assert call.caller == asgi.TRIGGER


def served(method: str, path: str) -> Wire:
    wire = Wire(chunk(b"", False))
    asyncio.run(asgi.app(scope(method, path), wire.receive, wire.send))
    return wire


def answer_of(wire: Wire) -> tuple[int, dict[bytes, bytes], Any]:
    start, body = wire.sent
    assert start["type"] == "http.response.start"
    assert body == {"type": "http.response.body", "body": body["body"]}
    return start["status"], dict(start["headers"]), json.loads(body["body"])


# A 404 or 405 is neither logged nor counted: its answer flushes nothing (Powertools would warn of empty metrics).
UNCOUNTED = pytest.mark.filterwarnings("error:No application metrics to publish:UserWarning")


@UNCOUNTED
def test_an_unknown_path_is_404_in_openais_error_format() -> None:
    # Given the app
    # When an unknown path is asked for
    status, headers, body = answer_of(served("GET", "/v2/nothing"))

    # Then it is a 404 in OpenAI's error format
    assert status == 404
    assert headers[b"content-type"] == b"application/json"
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["code"], body["error"]["type"]) == ("not_found", "invalid_request_error")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/chat/completions", b"POST"),
        ("POST", "/healthz", b"GET"),
        ("PUT", "/v1/responses/r1", b"GET, DELETE"),
    ],
)
@UNCOUNTED
def test_a_wrong_method_is_405_with_allow_in_openais_error_format(method: str, path: str, allow: bytes) -> None:
    # Given the app
    # When a route is asked for with a method it does not take
    status, headers, body = answer_of(served(method, path))

    # Then it is a 405, its `allow` header lists the methods, and the body is OpenAI's error format
    assert status == 405
    assert headers[b"allow"] == allow
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/healthz", "/healthz/"])
def test_healthz_is_200(path: str) -> None:
    # Given the app
    # When its readiness check is asked for
    status, headers, body = answer_of(served("GET", path))

    # Then it is up
    assert (status, body) == (200, {"status": "ok"})
    assert headers[b"content-type"] == b"application/json"


def test_the_app_ignores_lifespan_events() -> None:
    # Given the app, When a lifespan scope arrives, Then nothing is sent
    wire = Wire()
    asyncio.run(asgi.app({"type": "lifespan"}, wire.receive, wire.send))
    assert wire.sent == []


def test_a_whole_answer_leaves_before_what_is_left_after_it_runs() -> None:
    # Given an outcome with work left for after its answer (the settle, off Lambda)
    from lambda_chat import asgi
    from lambda_chat.calls import Outcome

    wire, order = Wire(), []

    async def after() -> None:
        order.append(len(wire.sent))  # how much of the answer had been sent when the settle began

    # When the app answers with it
    asyncio.run(asgi._answer(wire.call(), Outcome(200, {"ok": True}, after=after), "request-1"))

    # Then the start and the whole body were sent before the settle began
    assert order == [2]
    assert wire.bodies == [{"type": "http.response.body", "body": b'{"ok": true}'}]


def test_a_streams_books_close_before_its_end_when_asked() -> None:
    # Given frames, and work that must be done before the response ends (in Lambda, which freezes after the end)
    wire, order = Wire(), []

    async def frames() -> AsyncGenerator[bytes, None]:
        yield b"data: [DONE]\n\n"

    async def before_end() -> None:
        order.append([message.get("body") for message in wire.bodies])

    # When the stream is written
    asyncio.run(asyncio.wait_for(wire.call().stream(frames(), {}, before_end=before_end), 5))

    # Then the work ran after the last frame and before the empty final body that ends the response
    assert order == [[b"data: [DONE]\n\n"]]
    assert wire.bodies[-1] == {"type": "http.response.body", "body": b""}
