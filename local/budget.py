"""`make budget`: set a caller's spend limits and show what it has spent, in the deployed budget table.

    make budget KEY=<caller> [DAILY=5] [MONTHLY=100] [DAILY_TOKENS=...] [MONTHLY_TOKENS=...] [TABLE=...]

KEY is the caller as the function's log lines name it (`caller`): an API Gateway key's id (the stack's ApiKeyId
output, or `aws apigateway get-api-keys`), or EVENT_CALLER_NAME / the trigger's kind for events. Each limit takes
a number (USD, or tokens), `none` (no limit for this caller, whatever the default) or `default` (drop the
override). With no limit given it only shows the caller's limits (defaults and overrides), its spend today and
this month, and its calls in flight. The table and the defaults are the BudgetTableName output and the parameters
of the stack STACK (default lambda-chat), read with your AWS credentials; or TABLE, with the defaults from the
DEFAULT_*_BUDGET_* variables. A change applies to a warm container within BUDGET_LIMITS_CACHE_SECONDS (60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

from lambda_chat.budget import Limits, periods
from lambda_chat.budget_store import BudgetStore, LimitsItem, MonthItem, item_key, update_expression

LIMITS = {
    "daily": "daily_usd",
    "monthly": "monthly_usd",
    "daily_tokens": "daily_tokens",
    "monthly_tokens": "monthly_tokens",
}


DEFAULTS = {  # the stack parameter, and the function's variable, behind each default
    "daily_usd": ("DefaultDailyBudgetUSD", "DEFAULT_DAILY_BUDGET_USD"),
    "monthly_usd": ("DefaultMonthlyBudgetUSD", "DEFAULT_MONTHLY_BUDGET_USD"),
    "daily_tokens": ("DefaultDailyBudgetTokens", "DEFAULT_DAILY_BUDGET_TOKENS"),
    "monthly_tokens": ("DefaultMonthlyBudgetTokens", "DEFAULT_MONTHLY_BUDGET_TOKENS"),
}


def from_stack(stack: str) -> tuple[str, dict[str, str]]:
    """The stack's budget table, and its default limits (its parameters)."""
    import boto3

    described = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    outputs = {output["OutputKey"]: output["OutputValue"] for output in described.get("Outputs", [])}
    if "BudgetTableName" not in outputs:
        raise SystemExit(f"stack {stack} has no BudgetTableName output: is EnableBudgets true?")
    parameters = {item["ParameterKey"]: item.get("ParameterValue", "") for item in described.get("Parameters", [])}
    return str(outputs["BudgetTableName"]), {name: parameters.get(key, "") for name, (key, _) in DEFAULTS.items()}


def defaults_of(values: dict[str, str]) -> Limits:
    found = {name: limit_value(name, text) for name, text in values.items() if text}
    return Limits(**{name: value for name, value in found.items() if value not in (None, "default")})  # type: ignore[arg-type]


def limit_value(name: str, text: str) -> Decimal | int | str | None:
    if text in ("none", "default"):
        return None if text == "none" else "default"
    try:
        value = Decimal(text) if name.endswith("usd") else int(text)
    except (InvalidOperation, ValueError):
        raise SystemExit(f"{name}: '{text}' is not a number, 'none' or 'default'") from None
    if value < 0:
        raise SystemExit(f"{name}: must not be negative")
    return value


# -- what `make budget` does to the table (the function itself only reads the limits) ------------------------------


def set_limits(store: BudgetStore, caller: str, **changes: Decimal | int | None) -> None:
    """Override some of a caller's limits (None: no limit)."""
    if changes:
        limits = list(changes.items())
        store.client.update_item(
            TableName=store.table,
            Key=LimitsItem.key(caller),
            UpdateExpression=update_expression(set=[f"#a{index} = :v{index}" for index in range(len(limits))]),
            ExpressionAttributeNames={f"#a{index}": name for index, (name, _) in enumerate(limits)},
            ExpressionAttributeValues={
                f":v{index}": LimitsItem.value(value) for index, (_, value) in enumerate(limits)
            },
        )


def clear_limits(store: BudgetStore, caller: str, *names: str) -> None:
    """Back to the defaults: for the limits named, or all of them."""
    if names:
        placeholders = {f"#a{index}": name for index, name in enumerate(names)}
        store.client.update_item(
            TableName=store.table,
            Key=LimitsItem.key(caller),
            UpdateExpression=update_expression(remove=list(placeholders)),
            ExpressionAttributeNames=placeholders,
        )
    else:
        store.client.delete_item(TableName=store.table, Key=LimitsItem.key(caller))


def report(store: BudgetStore, caller: str) -> dict[str, Any]:
    """Limits, spend and holds of a caller now (by the store's clock), as read from the table: what is printed."""
    month, day = periods(store.clock())
    found = store.client.get_item(TableName=store.table, Key=LimitsItem.key(caller)).get("Item")
    limits = LimitsItem.decode(found or {}, store.defaults)
    item = store.client.get_item(TableName=store.table, Key=item_key(caller, month), ConsistentRead=True)
    read = MonthItem.from_item(item.get("Item", {}), day)
    return {
        "caller": caller,
        "month": month,
        "day": f"{month}-{day}",
        "limits": {key: _plain(value) for key, value in limits.__dict__.items()},
        "spent": {
            "today_usd": _plain(read.spend.day_usd),
            "month_usd": _plain(read.spend.month_usd),
            "today_tokens": read.spend.day_tokens,
            "month_tokens": read.spend.month_tokens,
        },
        "calls_in_flight": len(read.holds),
        "held_usd": _plain(sum((held.charge.usd for held in read.holds), Decimal(0))),
    }


def _plain(value: Decimal | int | None) -> float | int | None:
    return float(value) if isinstance(value, Decimal) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make budget", description=__doc__.split("\n\n")[0])
    parser.add_argument("key", help="the caller: an API key's id, or an event caller name")
    for option in LIMITS:
        parser.add_argument(f"--{option.replace('_', '-')}", dest=option, default="")
    parser.add_argument("--table", default="")
    parser.add_argument("--stack", default="lambda-chat")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("KEY= is required: the caller whose budget to set or show")
    if args.table:  # a table named outright: the defaults are the function's variables, if set here
        table, defaults = args.table, {name: os.environ.get(variable, "") for name, (_, variable) in DEFAULTS.items()}
    else:
        table, defaults = from_stack(args.stack)
    store = BudgetStore(table, defaults_of(defaults))
    changes = {
        LIMITS[option]: limit_value(LIMITS[option], getattr(args, option)) for option in LIMITS if getattr(args, option)
    }
    overrides = {name: value for name, value in changes.items() if value != "default"}
    if overrides:
        set_limits(store, args.key, **overrides)  # type: ignore[arg-type]
    dropped = [name for name, value in changes.items() if value == "default"]
    if dropped:
        clear_limits(store, args.key, *dropped)
    print(json.dumps(report(store, args.key), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
