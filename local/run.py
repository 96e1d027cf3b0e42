"""The main job, with no AWS account, no Docker and no OpenAI key: `make run`.

1. starts moto_server on loopback as Secrets Manager and DynamoDB, stores the key in a secret there, and
   creates the budget table there (spend per caller; set DEFAULT_DAILY_BUDGET_USD etc. to see limits bite);
2. with OPENAI_API_KEY in your shell, uses OpenAI itself with that key (through the secret,
   never handed to the function directly); otherwise starts a real local model (llama.cpp
   with Gemma 3 270M) behind an OpenAI-compatible server and points the function at it;
3. invokes the real handler in-process on each event file and prints what it answered;
4. stops everything it started, also on Ctrl-C or failure.

Each server's output goes to a log under .local/logs/, kept after the run; a server that does not
start makes the run fail with the end of its log.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from local.invoke import describe, invoke
from local.model import LocalModelServer
from local.moto import MotoServer

ROOT = Path(__file__).resolve().parent.parent
SECRET_ID = "lambda-chat/openai-api-key"  # noqa: S105 - the secret's name, not its value
BUDGET_TABLE = "lambda-chat-budgets"


def start_stack(stack: ExitStack) -> str:
    """Start the servers, set the function's environment, and say which backend will answer."""
    moto = MotoServer().start()
    stack.callback(moto.stop)
    logs = [moto.log_path]
    os.environ.update(moto.env())
    openai_key = os.environ.pop("OPENAI_API_KEY", None)  # the function must get it from the secret
    if openai_key:
        key = openai_key
        backend = "OpenAI (api.openai.com), with the OPENAI_API_KEY from your shell"
    else:
        key = secrets.token_urlsafe(24)
        model = LocalModelServer(api_key=key, embedding=True).start()  # it serves chat and embeddings
        stack.callback(model.stop)
        logs.append(model.log_path)
        os.environ["OPENAI_BASE_URL"] = model.base_url
        os.environ["DEFAULT_MODEL"] = model.alias
        os.environ["EMBEDDING_MODELS"] = model.alias
        os.environ.setdefault("ALLOW_UNPRICED_MODELS", "true")  # it has no price: budgets count its tokens only
        backend = (
            f"a local model: llama.cpp serving {model.alias} at {model.base_url} (offline; no OpenAI key set).\n"
            "  Do not judge its answers: a 270M model on 2 CPU threads is often wrong or repetitive. What this proves\n"
            "  is the whole path: event -> validation -> key from Secrets Manager -> OpenAI SDK -> HTTP -> envelope."
        )
    moto.secrets_client().create_secret(Name=SECRET_ID, SecretString=key)
    moto.create_budget_table(BUDGET_TABLE)
    os.environ["BUDGET_TABLE"] = BUDGET_TABLE
    os.environ["OPENAI_API_KEY_SECRET_ID"] = SECRET_ID
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # the envelopes are the output; LOG_LEVEL=INFO shows log lines
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # and POWERTOOLS_METRICS_DISABLED=false the EMF
    return backend + "\n  server logs: " + ", ".join(str(log.relative_to(ROOT)) for log in logs)


def spend_report() -> str:
    """What each caller spent, as the budget table recorded it (moto's, on loopback)."""
    import boto3

    items = boto3.client("dynamodb").scan(TableName=BUDGET_TABLE)["Items"]
    lines = [
        f"  {item['caller']['S']:<18} {item['period']['S']}  ${float(item['usd']['N']):.6f}  "
        f"{item['tokens']['N']} tokens"
        for item in sorted(items, key=lambda item: item["caller"]["S"])
        if "usd" in item
    ]
    return "spend per caller (budget table):\n" + "\n".join(lines) + "\n"


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    events = [Path(a) for a in args] or sorted((ROOT / "events").glob("*.json"))
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    with ExitStack() as stack:
        print("starting moto_server (Secrets Manager) and the backend...", flush=True)
        backend = start_stack(stack)
        print(f"backend: {backend}\n", flush=True)
        for path in events:
            result = invoke(json.loads(path.read_text()))
            print(describe(path.name, result), "\n", flush=True)
        print(spend_report())
        print(f"backend that answered: {backend.splitlines()[0]}")
        print("stopping the servers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
