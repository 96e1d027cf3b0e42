#!/bin/bash
# StreamingFunction's handler (template.yaml): the Lambda Web Adapter layer's /opt/bootstrap (AWS_LAMBDA_EXEC_WRAPPER)
# runs this script, waits until GET /healthz answers, then forwards each API Gateway request to this server over
# loopback. h11 and asyncio are named so uvicorn never looks for uvloop/httptools/websockets (not shipped).
export PYTHONPATH="${LAMBDA_TASK_ROOT:-$(dirname "$0")}${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m uvicorn lambda_chat.asgi:app --host 127.0.0.1 --port "${PORT:-8080}" \
  --http h11 --loop asyncio --ws none --no-access-log --timeout-graceful-shutdown 1
