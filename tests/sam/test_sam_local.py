"""The real SAM CLI on the function: `sam local invoke` on every file of events/, and `sam local start-api`.

The parts of `make sam-local` (local/sam_local.py), with a fake upstream in place of the model: a Docker engine
(the one that runs, or docker.io installed and dockerd started), AWS's base image or the offline stand-in (built
once, cached), `sam build` for this machine's architecture, and moto_server as Secrets Manager and DynamoDB; the
servers listen on the Docker bridge's address. About 3 to 4 minutes on a fresh 2-core machine, image included.
Skipped, loudly, only where no Docker engine can be had at all.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from local import sam_local
from local.sam_local import ApiCall, Invocation, Upstream
from tests.support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.sam_local

EVENTS = sorted(sam_local.EVENTS.glob("*.json"))
HTTP_EVENTS = {"apigateway-http-api.json", "apigateway-rest-messages.json", "apigateway-rest.json", "function-url.json"}


@dataclass
class Run:
    invocations: dict[str, Invocation]
    calls: dict[str, ApiCall]
    upstream: FakeOpenAI
    key: str
    secret_value: str
    budget_items: list[dict[str, Any]]
    idempotency_items: list[dict[str, Any]]
    env_vars: str


def skip_loudly(reason: str) -> None:
    banner = f"\n{'!' * 100}\nSKIPPED tests/sam (sam local): {reason}\n{'!' * 100}\n"
    sys.__stderr__.write(banner)  # past pytest's capture: a skip here must not go unseen
    sys.__stderr__.flush()
    pytest.skip(f"sam local: {reason}")


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    key = secrets.token_urlsafe(24)  # only ever in the secret: the function must read it from there
    started = time.monotonic()
    with ExitStack() as stack:
        fakes: list[FakeOpenAI] = []

        def fake_upstream(host: str) -> Upstream:
            fake = FakeOpenAI(required_key=key, host=host).start()
            stack.callback(fake.stop)
            fakes.append(fake)
            return Upstream(fake.base_url, key, description="a fake OpenAI (tests/support/fake_openai.py)")

        try:
            session = sam_local.set_up(stack, fake_upstream)
        except sam_local.NoDocker as exc:
            skip_loudly(str(exc))
        local = session.local
        invocations = sam_local.invoke_all(session.built, local, session.image, EVENTS, jobs=2)
        with sam_local.start_api(session.built, local, session.image) as base_url:
            calls = sam_local.api_calls(base_url)
        dynamodb = local.moto.client("dynamodb")
        yield Run(
            invocations={done.event: done for done in invocations},
            calls={call.name: call for call in calls},
            upstream=fakes[0],
            key=key,
            secret_value=local.moto.secrets_client().get_secret_value(SecretId=sam_local.SECRET_ID)["SecretString"],
            budget_items=dynamodb.scan(TableName=sam_local.BUDGET_TABLE)["Items"],
            idempotency_items=dynamodb.scan(TableName=sam_local.IDEMPOTENCY_TABLE)["Items"],
            env_vars=local.env_vars_file.read_text(),
        )
    seconds = time.monotonic() - started
    print(f"\nsam local: set-up, {len(EVENTS)} invocations, start-api and clean-up in {seconds:.0f} s")


@pytest.mark.parametrize("event", [path.name for path in EVENTS])
def test_every_event_gets_its_envelope_from_the_container(run: Run, event: str) -> None:
    # When the event file went through `sam local invoke ChatFunction`
    done = run.invocations[event]
    # Then the container ran the function once, as Lambda reports it
    assert len(done.reports) == 1, done.output[-3000:]
    assert "Duration:" in done.reports[0]
    # And an invalid request is a 400 (HTTP) or a failure envelope (direct); any other one succeeds
    envelope = done.envelope
    assert set(envelope) >= {"success", "completion", "usage", "finish_reason", "error"}, done.output[-3000:]
    invalid = event.startswith("invalid-")
    if event in HTTP_EVENTS or event.startswith("invalid-apigateway"):
        assert done.status == (400 if invalid else 200), done.output[-3000:]
    else:
        assert done.status is None  # a direct result: the envelope itself
    assert envelope["success"] is not invalid, done.output[-3000:]
    if invalid:
        assert envelope["error"] and envelope["completion"] is None
    else:
        assert envelope["completion"] and envelope["usage"]["total_tokens"] > 0


def test_the_key_came_from_the_secret_and_reached_the_upstream(run: Run) -> None:
    # Given the key was put only in the secret (moto_server's Secrets Manager), never in the functions' variables
    assert run.secret_value == run.key
    assert run.key not in run.env_vars
    # Then every call the upstream got carried it, as the function's own Bearer key
    valid = [name for name in run.invocations if not name.startswith("invalid-")]
    assert len(run.upstream.received) >= len(valid) + 2  # the events, and start-api's two calls with a key
    for request in run.upstream.received:
        assert request.path == "/v1/chat/completions"
        assert request.headers["authorization"] == f"Bearer {run.key}"


def test_the_tables_in_moto_were_written_from_the_containers(run: Run) -> None:
    # The budget table has the callers' spend; the idempotency table the EventBridge event's record (its id)
    assert [item for item in run.budget_items if "usd" in item]
    assert run.idempotency_items


def test_start_api_answers_through_the_key_authorizer(run: Run) -> None:
    # With the key as x-api-key, or as a Bearer token (the authorizer reads either): the envelope
    for name in ("x-api-key", "Authorization: Bearer"):
        call = run.calls[name]
        assert call.status == 200, call
        assert call.answer["success"] is True and call.answer["completion"]
    # Without a key the authorizer refuses: API Gateway answers 401; SAM's emulator 502 (README: sam local)
    refused = run.calls["no API key"]
    assert refused.status in (401, 502), refused
    assert "success" not in refused.answer
    # An invalid body (no request model check in the emulator) reaches the function: its 400 envelope
    invalid = run.calls["x-api-key, invalid body"]
    assert invalid.status == 400 and invalid.answer["success"] is False, invalid
