"""A request through API Gateway (REST) to the integration stack, and the answer it gets: status, envelope, headers."""

from __future__ import annotations

import json
from typing import Any

from tests.support.events import load_event
from tests.support.stack import Stack

PROMPT_CANARY = "canary-prompt-7f3a the lighthouse keeper's secret recipe"


def api_request(body: dict[str, Any]) -> dict[str, Any]:
    event = load_event("apigateway-rest.json")
    event["isBase64Encoded"] = False
    event["body"] = json.dumps(body)
    return event


def call(stack: Stack, body: dict[str, Any] | None = None, **kwargs: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    response = stack.invoke(api_request(body or {"prompt": PROMPT_CANARY}), **kwargs)
    return response["statusCode"], json.loads(response["body"]), response["headers"]
