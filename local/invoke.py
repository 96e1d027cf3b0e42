"""Docker-free `sam local invoke`: run the real handler in-process on event files.

    python -m local.invoke events/direct.json events/apigateway-rest.json

It uses the environment as it is: OPENAI_API_KEY_SECRET_ID must name a secret that
boto3 can read (real AWS credentials, or AWS_ENDPOINT_URL_SECRETS_MANAGER pointing at
moto_server, as `make run` does), and OPENAI_BASE_URL may point at any
OpenAI-compatible server.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from local.context import FakeLambdaContext


def invoke(event: Any, timeout_ms: int = 30_000) -> Any:
    """Run the handler on one event, as Lambda would (JSON in, JSON out)."""
    from lambda_chat.handler import lambda_handler

    result = lambda_handler(json.loads(json.dumps(event)), FakeLambdaContext(timeout_ms=timeout_ms))
    return json.loads(json.dumps(result))


def describe(name: str, result: Any) -> str:
    """A readable report of one invocation: the HTTP status where there is one, then the envelope."""
    if isinstance(result, dict) and "statusCode" in result:
        envelope = json.loads(result["body"])
        extra = {k: v for k, v in result.get("headers", {}).items() if k.lower() == "retry-after"}
        head = f"{name}: HTTP {result['statusCode']}" + (f" {extra}" if extra else "")
    else:
        envelope = result
        head = f"{name}: envelope (direct result)"
    return f"{head}\n{json.dumps(envelope, indent=2, ensure_ascii=False)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events", nargs="+", type=Path, help="event files (JSON)")
    parser.add_argument("--timeout-ms", type=int, default=30_000, help="the fake Lambda timeout (default 30000)")
    args = parser.parse_args(argv)
    for path in args.events:
        result = invoke(json.loads(path.read_text()), args.timeout_ms)
        print(describe(path.name, result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
