"""A naive baseline handler, written the way a first draft often is, for comparison only.

Everything is imported eagerly at module load (boto3, openai, Powertools Logger, Tracer and Metrics), and
nothing is kept between invocations: every call builds a boto3 Secrets Manager client, reads the secret,
builds a new OpenAI client (and so a new connection pool and TLS context) and makes one request.
It answers the same API Gateway event with the same envelope shape as the real handler.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import boto3
import openai
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service="lambda-chat-naive")
tracer = Tracer(service="lambda-chat-naive")
metrics = Metrics(namespace="LambdaChatBenchmark", service="lambda-chat-naive")


def _request(event: dict[str, Any]) -> dict[str, Any]:
    body = event["body"]
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    data: dict[str, Any] = json.loads(body)
    return data


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request = _request(event)
    secrets = boto3.client("secretsmanager")
    key = secrets.get_secret_value(SecretId=os.environ["OPENAI_API_KEY_SECRET_ID"])["SecretString"]
    client = openai.OpenAI(api_key=key, base_url=os.environ.get("OPENAI_BASE_URL"), max_retries=0)
    messages = [{"role": "user", "content": request["prompt"]}]
    if request.get("system_message"):
        messages.insert(0, {"role": "system", "content": request["system_message"]})
    response = client.chat.completions.create(
        model=os.environ.get("DEFAULT_MODEL", "gpt-4o-mini"),
        messages=messages,  # type: ignore[arg-type]
        temperature=request.get("temperature", 0.7),
        max_tokens=request.get("max_tokens", 1000),
    )
    choice = response.choices[0]
    usage = response.usage.model_dump() if response.usage else None
    logger.info("chat completed", outcome="success", status=200, total_tokens=usage and usage["total_tokens"])
    metrics.add_metric(name="Completions", unit=MetricUnit.Count, value=1)
    envelope = {
        "success": True,
        "completion": choice.message.content,
        "usage": usage,
        "finish_reason": choice.finish_reason,
        "error": None,
    }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps(envelope),
        "isBase64Encoded": False,
    }
