"""Reading the function's CloudWatch EMF output, and an upstream answer whose figures the tests know."""

from __future__ import annotations

import json
from typing import Any

# A chat completion with known usage, cached and reasoning tokens: what the EMF and budget tests have OpenAI answer.
KNOWN_RESPONSE = {
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 200},
        "completion_tokens_details": {"reasoning_tokens": 100},
    },
}


def emf_lines(output: str) -> list[dict[str, Any]]:
    """The EMF documents printed, with each metric's value list ([1.0]) read as its single value."""
    blobs = [json.loads(line) for line in output.splitlines() if line.startswith('{"_aws"')]
    for blob in blobs:
        for metric in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            (blob[metric["Name"]],) = blob[metric["Name"]]
    return blobs
