#!/bin/bash
# StreamingFunction's handler (template.yaml): the Lambda Web Adapter layer's /opt/bootstrap (AWS_LAMBDA_EXEC_WRAPPER)
# runs this script, waits until GET /healthz answers, then forwards each API Gateway request to this server over
# loopback. lambda_chat.asgi's main() runs uvicorn on 127.0.0.1:$PORT without its command line (faster to start).
export PYTHONPATH="${LAMBDA_TASK_ROOT:-$(dirname "$0")}${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m lambda_chat.asgi
