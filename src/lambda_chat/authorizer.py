"""API Gateway REQUEST authorizer: the caller's API key as `Authorization: Bearer <key>` or `x-api-key`.

OpenAI clients send their `api_key` as a Bearer token; API Gateway reads API keys only from `x-api-key`, unless
the API's key source is AUTHORIZER. This authorizer takes the key from either header and hands it back as
`usageIdentifierKey`, so API Gateway still checks it against the usage plan (an unknown key is a 403, throttle and
quota apply per key). It does not judge the key itself.

Standard library only, no logging: its cold start stays tiny, and neither the key nor any header is ever written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

BEARER = "bearer"


def handler(event: Mapping[str, Any], context: object) -> dict[str, Any]:
    """Allow every route of this API and stage for the key's usage plan, or raise Unauthorized (401)."""
    key = api_key_from(event.get("headers"))
    api_and_stage = _api_and_stage(event.get("methodArn"))
    if key is None or api_and_stage is None:
        raise Exception("Unauthorized")  # the exact message API Gateway turns into a 401
    return {
        # Logged by API Gateway and passed to the integration: a digest, never the key.
        "principalId": "key-" + hashlib.sha256(key.encode()).hexdigest()[:16],
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": f"{api_and_stage}/*"}],
        },
        "usageIdentifierKey": key,
    }


def api_key_from(headers: object) -> str | None:
    """`x-api-key` if sent (only sent on purpose), else a Bearer token; header names in any case."""
    if not isinstance(headers, Mapping):
        return None
    by_name = {str(name).lower(): value for name, value in headers.items() if isinstance(value, str)}
    explicit = by_name.get("x-api-key", "").strip()
    if explicit:
        return explicit
    scheme, _, token = by_name.get("authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() == BEARER and token:
        return token
    return None


def _api_and_stage(method_arn: object) -> str | None:
    """`arn:aws:execute-api:region:account:api-id/stage` from the method ARN (`.../stage/VERB/path`)."""
    if not isinstance(method_arn, str):
        return None
    api, _, rest = method_arn.partition("/")
    stage = rest.partition("/")[0]
    if not api.startswith("arn:") or ":execute-api:" not in api or not stage:
        return None
    return f"{api}/{stage}"
