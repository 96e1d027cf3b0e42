"""What the fake upstream answers on the Responses and Embeddings APIs, as OpenAI would.

A response's output is the same natural completion as chat's (one word per output token, cut
short by `max_output_tokens` with status "incomplete"); streamed, it is OpenAI's typed events
from `response.created` to `response.completed`. Stored responses (`store` is not false) can be
retrieved, deleted and cancelled by id.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

NATURAL_OUTPUT_TOKENS = 7
_ids = itertools.count(1)


def words_of(request: dict[str, Any]) -> int:
    limit = request.get("max_output_tokens")
    return min(limit or NATURAL_OUTPUT_TOKENS, NATURAL_OUTPUT_TOKENS)


def input_tokens(request: dict[str, Any]) -> int:
    given = request.get("input")
    items = given if isinstance(given, list) else [{"content": given or ""}]
    text = " ".join(str(item.get("content", "")) for item in items if isinstance(item, dict))
    return len(text.split()) + len(str(request.get("instructions") or "").split()) + 4


def response_document(request: dict[str, Any], text: str, output_tokens: int, *, status: str | None = None) -> dict:
    """A whole response: one message of output text, and its usage."""
    prompt = input_tokens(request)
    cut = output_tokens >= (request.get("max_output_tokens") or NATURAL_OUTPUT_TOKENS + 1)
    status = status or ("incomplete" if cut else "completed")
    message = {
        "type": "message",
        "id": "msg_fake",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    return {
        "id": f"resp_fake{next(_ids)}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": request.get("model", "unknown"),
        "output": [message] if status != "in_progress" else [],
        "previous_response_id": request.get("previous_response_id"),
        "store": request.get("store", True),
        "error": None,
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + output_tokens,
        }
        if status != "in_progress"
        else None,
    }


def natural_response(request: dict[str, Any]) -> dict[str, Any]:
    count = words_of(request)
    return response_document(request, " ".join(["word"] * count), count)


def response_events(request: dict[str, Any], deltas: list[str]) -> list[dict[str, Any]]:
    """The typed events of a streamed response with these text deltas."""
    final = response_document(request, "".join(deltas), len(deltas))
    started = {**final, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    item = {**final["output"][0], "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    where = {"item_id": "msg_fake", "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        {"type": "response.content_part.added", **where, "part": part},
    ]
    events += [{"type": "response.output_text.delta", **where, "delta": delta} for delta in deltas]
    events += [
        {"type": "response.output_text.done", **where, "text": "".join(deltas)},
        {"type": "response.content_part.done", **where, "part": final["output"][0]["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": final["output"][0]},
        {"type": f"response.{final['status']}", "response": final},
    ]
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def embeddings_document(request: dict[str, Any]) -> dict[str, Any]:
    """One small vector per input; each text's words (or token ids) are its tokens."""
    given = request.get("input")
    inputs = (
        [given]
        if isinstance(given, str) or (isinstance(given, list) and given and isinstance(given[0], int))
        else given
    )
    inputs = inputs if isinstance(inputs, list) else []
    tokens = sum(len(item.split()) if isinstance(item, str) else len(item) for item in inputs)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": [0.1 * (index + 1), -0.2, 0.3]}
            for index in range(len(inputs))
        ],
        "model": request.get("model", "unknown"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
