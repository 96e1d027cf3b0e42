"""template.yaml as CloudFormation sees it: the SAM transform rendered offline, then read like a deployed stack.

The transform runs in the SAM CLI's own virtualenv (.local/sam-venv, which `make test` installs first) through
render_sam.py. A small evaluator then resolves parameters, conditions and Fn::Sub the way CloudFormation would, so
the assertions read concrete values (600000, not {"Fn::Sub": ...}) and a broken link from a parameter shows up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SAM_PYTHON = ROOT / ".local" / "sam-venv" / "bin" / "python"
RENDER = Path(__file__).resolve().parent / "render_sam.py"

# Not the defaults, so each value below can only come from its parameter.
PARAMETERS = {
    "OpenAIApiTimeoutSeconds": "600",
    "StreamKeepaliveSeconds": "20",
    "WebAdapterLayerVersion": "31",
    "SecretKmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "TracingMode": "Active",
    "AlarmEmail": "ops@example.com",
    "CreateExampleStateMachine": "true",
    "DefaultDailyBudgetUSD": "2.5",
    "DefaultMonthlyBudgetTokens": "1000000",
}
PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "lambda-chat",
}
BASIC_LOGGING = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
XRAY_WRITE = "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess"
COMPLETION_ACTIONS = {
    "secretsmanager:GetSecretValue",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "kms:Decrypt",
}
NO_VALUE = object()


class Stack:
    """The rendered template with parameters, conditions and the intrinsics it uses resolved; other resources'
    references stay symbolic, as `<Name>` or `<Name.Attribute>`."""

    def __init__(self, template: dict[str, Any], overrides: dict[str, str]) -> None:
        self.template = template
        defaults = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
        self.parameters = defaults | PSEUDO | overrides
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self.value(self.template["Conditions"][name]))
        return self._conditions[name]

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [item for item in (self.value(item) for item in node) if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (name, argument), *_ = node.items()
            if name == "Ref":
                if argument == "AWS::NoValue":
                    return NO_VALUE
                return self.parameters.get(argument, f"<{argument}>")
            if name == "Fn::GetAtt":
                return f"<{argument[0]}.{argument[1]}>"
            if name == "Fn::Sub":
                text, names = (argument, {}) if isinstance(argument, str) else argument
                names = {key: self.value(value) for key, value in names.items()}
                return re.sub(r"\$\{([^}!]+)\}", lambda m: str(names.get(m[1], self.lookup(m[1]))), text)
            if name == "Fn::If":
                return self.value(argument[1] if self.condition(argument[0]) else argument[2])
            if name == "Fn::Equals":
                return self.value(argument[0]) == self.value(argument[1])
            if name == "Fn::Not":
                return not self.value(argument[0])
            if name == "Condition":
                return self.condition(argument)
        return {key: value for key, value in ((k, self.value(v)) for k, v in node.items()) if value is not NO_VALUE}

    def lookup(self, name: str) -> str:
        return self.parameters.get(name, f"<{name}>")

    def resource(self, logical_id: str) -> dict[str, Any]:
        resource: dict[str, Any] = self.value(self.template["Resources"][logical_id])
        return resource

    def resources_of(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for logical_id, resource in self.template["Resources"].items():
            if resource["Type"] == kind:
                yield logical_id, self.resource(logical_id)

    @property
    def api_body(self) -> dict[str, Any]:
        body: dict[str, Any] = self.resource("ChatApi")["Properties"]["Body"]
        return body


def render(overrides: dict[str, str]) -> Stack:
    if not SAM_PYTHON.exists():
        pytest.skip(f"{SAM_PYTHON} is missing: `make sam-cli` installs the SAM CLI and its translator")
    rendered = subprocess.run(
        [str(SAM_PYTHON), str(RENDER), str(ROOT / "template.yaml"), json.dumps(overrides)],
        cwd=ROOT,
        env={**os.environ, "SAM_CLI_TELEMETRY": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    return Stack(json.loads(rendered.stdout), overrides)


@pytest.fixture(scope="module")
def stack() -> Stack:
    # Given template.yaml rendered by the SAM transform with non-default parameters
    return render(PARAMETERS)


def methods(body: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in body["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_v1_streams_through_the_response_streaming_invocation_of_the_live_alias(stack: Stack) -> None:
    # When the /v1 route's integration is read
    integration = stack.api_body["paths"]["/v1/{proxy+}"]["x-amazon-apigateway-any-method"][
        "x-amazon-apigateway-integration"
    ]
    # Then it is a Lambda proxy integration through InvokeWithResponseStream, in STREAM mode
    assert (integration["type"], integration["httpMethod"]) == ("aws_proxy", "POST")
    assert integration["responseTransferMode"] == "STREAM"
    assert integration["uri"] == (
        "arn:aws:apigateway:us-east-1:lambda:path/2021-11-15/functions/<StreamingFunctionAliaslive>"
        "/response-streaming-invocations"
    )
    # And it calls the `live` alias of StreamingFunction
    assert stack.resource("StreamingFunctionAliaslive")["Properties"]["FunctionName"] == "<StreamingFunction>"
    # And its timeout is an integer, as the OpenAPI extension defines it: API Gateway's most (the function's own
    # timeout, the parameter, ends a request first)
    assert integration["timeoutInMillis"] == 900_000 and isinstance(integration["timeoutInMillis"], int)


def test_chat_still_goes_to_chat_function_buffered_and_validated(stack: Stack) -> None:
    # When the API's routes are read
    paths = stack.api_body["paths"]
    # Then there are exactly /chat and /v1 (the old /v1 routes on ChatFunction are gone)
    assert set(paths) == {"/chat", "/v1/{proxy+}"}
    chat = paths["/chat"]
    assert set(chat) == {"post"}
    integration = chat["post"]["x-amazon-apigateway-integration"]
    # And POST /chat is ChatFunction's alias, invoked the buffered way, with its body checked by the request model
    assert integration["uri"] == (
        "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/<ChatFunctionAliaslive>/invocations"
    )
    assert integration.get("responseTransferMode", "BUFFERED") == "BUFFERED"
    assert chat["post"]["x-amazon-apigateway-request-validator"] == "body-only"
    assert chat["post"]["parameters"][0]["schema"] == {"$ref": "#/definitions/chatrequest"}


def test_the_endpoint_is_regional(stack: Stack) -> None:
    # When the REST API is read, Then it is regional (an edge-optimized one idles a quiet stream out after 30 s)
    assert stack.resource("ChatApi")["Properties"]["EndpointConfiguration"] == {"Types": ["REGIONAL"]}


def test_streaming_function_runs_behind_the_arm64_web_adapter(stack: Stack) -> None:
    # When StreamingFunction is read
    function = stack.resource("StreamingFunction")["Properties"]
    env = function["Environment"]["Variables"]
    # Then it is python3.13 on arm64, with AWS's arm64 adapter layer at the parameter's version
    assert (function["Runtime"], function["Architectures"], function["Handler"]) == ("python3.13", ["arm64"], "run.sh")
    assert function["Layers"] == [
        f"arn:aws:lambda:us-east-1:753240598075:layer:LambdaAdapterLayerArm64:{PARAMETERS['WebAdapterLayerVersion']}"
    ]
    # And the adapter wraps the handler, streams, and waits for /healthz on the port uvicorn listens on
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert env["AWS_LWA_PORT"] == "8080"
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/healthz"
    # And its timeouts come from the one parameter, as the API's does
    assert int(function["Timeout"]) == int(PARAMETERS["OpenAIApiTimeoutSeconds"])
    assert int(env["API_GATEWAY_TIMEOUT_MS"]) == int(PARAMETERS["OpenAIApiTimeoutSeconds"]) * 1000
    assert env["STREAM_KEEPALIVE_SECONDS"] == PARAMETERS["StreamKeepaliveSeconds"]


def test_both_completion_functions_share_one_configuration(stack: Stack) -> None:
    # When the environments of ChatFunction and StreamingFunction are read
    chat = stack.resource("ChatFunction")["Properties"]["Environment"]["Variables"]
    streaming = stack.resource("StreamingFunction")["Properties"]["Environment"]["Variables"]
    # Then every ChatFunction variable reaches StreamingFunction with the same value
    assert {"OPENAI_API_KEY_SECRET_ID", "IDEMPOTENCY_TABLE", "DEFAULT_MODEL", "MODEL_PRICES_JSON"} <= set(chat)
    assert {name: streaming.get(name) for name in chat} == chat
    # And the streaming-only ones are StreamingFunction's alone
    assert "AWS_LAMBDA_EXEC_WRAPPER" not in chat


def test_api_gateway_may_invoke_streaming_function_on_v1_only(stack: Stack) -> None:
    # When the permissions API Gateway has on StreamingFunction are read
    grants = [
        resource["Properties"]
        for _, resource in stack.resources_of("AWS::Lambda::Permission")
        if resource["Properties"]["FunctionName"] == "<StreamingFunctionAliaslive>"
    ]
    # Then there is one, for this API's /v1 routes only, on the alias the integration calls
    assert len(grants) == 1
    (grant,) = grants
    assert (grant["Action"], grant["Principal"]) == ("lambda:InvokeFunction", "apigateway.amazonaws.com")
    assert grant["SourceArn"] == "arn:aws:execute-api:us-east-1:123456789012:<ChatApi>/*/*/v1/*"


def test_every_method_uses_the_key_authorizer_and_requires_an_api_key(stack: Stack) -> None:
    body = stack.api_body
    # Then the API takes its keys from the authorizer
    assert stack.resource("ChatApi")["Properties"]["ApiKeySourceType"] == "AUTHORIZER"
    # And every method has both the authorizer and the API key requirement
    operations = list(methods(body))
    assert len(operations) == 2
    for path, method, operation in operations:
        assert {"KeyAuthorizer": []} in operation["security"], (path, method)
        assert {"api_key": []} in operation["security"], (path, method)
    # And the authorizer is KeyAuthorizerFunction, a REQUEST one, uncached, with no identity source to demand
    authorizer = body["securityDefinitions"]["KeyAuthorizer"]["x-amazon-apigateway-authorizer"]
    assert authorizer["type"] == "request"
    assert authorizer["authorizerResultTtlInSeconds"] == 0
    assert "identitySource" not in authorizer
    assert authorizer["authorizerUri"] == (
        "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/<KeyAuthorizerFunction.Arn>/invocations"
    )
    function = stack.resource("KeyAuthorizerFunction")["Properties"]
    assert (function["Handler"], function["Runtime"], function["MemorySize"]) == (
        "lambda_chat.authorizer.handler",
        "python3.13",
        128,
    )


@pytest.mark.parametrize(
    ("response_type", "status", "error_type", "code"),
    [
        ("UNAUTHORIZED", "401", "invalid_request_error", "invalid_api_key"),
        ("INVALID_API_KEY", "403", "invalid_request_error", "invalid_api_key"),
        ("ACCESS_DENIED", "403", "invalid_request_error", "invalid_api_key"),
        ("THROTTLED", "429", "rate_limit_error", "rate_limit_exceeded"),
        ("QUOTA_EXCEEDED", "429", "rate_limit_error", "insufficient_quota"),
        ("REQUEST_TOO_LARGE", "413", "invalid_request_error", "request_too_large"),
        ("INTEGRATION_TIMEOUT", "504", "server_error", "timeout"),
        ("DEFAULT_4XX", None, "invalid_request_error", None),
        ("DEFAULT_5XX", None, "server_error", None),
    ],
)
def test_gateway_errors_are_in_openai_format(
    stack: Stack, response_type: str, status: str | None, error_type: str, code: str | None
) -> None:
    # When API Gateway's own error response of this type is read
    response = stack.api_body["x-amazon-apigateway-gateway-responses"][response_type]
    # Then it has the status and a JSON content type
    assert response.get("statusCode") == status
    assert response["responseParameters"]["gatewayresponse.header.Content-Type"] == "'application/json'"
    # And its body, once API Gateway fills in its variables (JSON strings, quotes included), is an OpenAI error
    template = response["responseTemplates"]["application/json"]
    filled = template.replace("$context.error.messageString", '"what API Gateway says"')
    error = json.loads(filled)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (error_type, None, code)
    assert error["message"]


def test_a_chat_body_refused_by_the_request_model_gets_the_envelope(stack: Stack) -> None:
    # Given that only POST /chat validates its body against a request model
    methods = {(path, method): op for path, item in stack.api_body["paths"].items() for method, op in item.items()}
    with_model = [key for key, op in methods.items() if "x-amazon-apigateway-request-validator" in op]
    assert with_model == [("/chat", "post")]
    # When API Gateway refuses a body, its answer is the envelope /chat callers always get
    response = stack.api_body["x-amazon-apigateway-gateway-responses"]["BAD_REQUEST_BODY"]
    assert response["statusCode"] == "400"
    template = response["responseTemplates"]["application/json"]
    envelope = json.loads(template.replace("$context.error.messageString", '"Invalid request body"'))
    assert envelope == {
        "success": False, "completion": None, "usage": None, "finish_reason": None, "error": "Invalid request body"
    }  # fmt: skip


def test_the_401_tells_how_to_send_the_key_and_a_spent_quota_is_not_retried(stack: Stack) -> None:
    responses = stack.api_body["x-amazon-apigateway-gateway-responses"]
    message = json.loads(responses["UNAUTHORIZED"]["responseTemplates"]["application/json"])["error"]["message"]
    assert "Authorization: Bearer" in message and "x-api-key" in message
    assert responses["QUOTA_EXCEEDED"]["responseParameters"]["gatewayresponse.header.x-should-retry"] == "'false'"


def role_statements(stack: Stack, role_id: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The AWS-managed policy ARNs of a role, and every statement of its inline and template-managed policies."""
    role = stack.resource(role_id)["Properties"]
    aws_managed, statements = [], []
    for arn in role.get("ManagedPolicyArns", []):
        if arn.startswith("<"):  # a policy of this template
            document = stack.resource(arn.strip("<>"))["Properties"]["PolicyDocument"]
            statements += document["Statement"]
        else:
            aws_managed.append(arn)
    for policy in role.get("Policies", []):
        statements += policy["PolicyDocument"]["Statement"]
    return aws_managed, statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("role_id", ["ChatFunctionRole", "StreamingFunctionRole"])
def test_completion_functions_have_least_privilege(stack: Stack, role_id: str) -> None:
    # When every statement of the function's role is read
    aws_managed, statements = role_statements(stack, role_id)
    # Then the only AWS-managed policies are basic logging and X-Ray writes (tracing is on in this render)
    assert set(aws_managed) <= {BASIC_LOGGING, XRAY_WRITE} and BASIC_LOGGING in aws_managed
    # And no statement allows a wildcard action or a wildcard resource
    actions = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            assert "*" not in action, statement
            actions.add(action)
        for resource in as_list(statement["Resource"]):
            assert "*" not in resource, statement
    # And the completion permissions are exactly the secret, the idempotency records and the secret's KMS key
    completion = {action for action in actions if action.split(":")[0] in {"secretsmanager", "dynamodb", "kms"}}
    assert completion == COMPLETION_ACTIONS
    by_action = {action: statement for statement in statements for action in as_list(statement["Action"])}
    assert by_action["secretsmanager:GetSecretValue"]["Resource"] == "<OpenAIKeySecret>"
    assert by_action["dynamodb:PutItem"]["Resource"] == "<IdempotencyTable.Arn>"
    assert by_action["kms:Decrypt"]["Resource"] == PARAMETERS["SecretKmsKeyArn"]
    assert by_action["kms:Decrypt"]["Condition"] == {
        "StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}
    }
    # And StreamingFunction may do nothing else at all (ChatFunction also delivers its async results)
    if role_id == "StreamingFunctionRole":
        assert actions == COMPLETION_ACTIONS
    else:
        assert actions - COMPLETION_ACTIONS == {"events:PutEvents", "sqs:SendMessage"}


@pytest.mark.parametrize("role_id", ["ChatFunctionRole", "StreamingFunctionRole"])
def test_the_budget_table_may_only_be_read_and_updated_item_by_item(stack: Stack, role_id: str) -> None:
    # When the statements about the budget table are read
    _, statements = role_statements(stack, role_id)
    on_budgets = [s for s in statements if "<BudgetTable.Arn>" in as_list(s["Resource"])]
    # Then one allows GetItem and UpdateItem on the table itself: no Put, Delete, Query, Scan, index or stream
    assert len(on_budgets) == 1 and set(as_list(on_budgets[0]["Action"])) == {"dynamodb:GetItem", "dynamodb:UpdateItem"}
    assert on_budgets[0]["Resource"] == "<BudgetTable.Arn>"
    # And with budgets off, the table, its statement and its variable are gone
    off = Stack(stack.template, PARAMETERS | {"EnableBudgets": "false"})
    assert not off.condition("BudgetsOn")
    _, statements = role_statements(off, role_id)
    assert not [s for s in statements if "<BudgetTable.Arn>" in as_list(s["Resource"])]
    assert "BUDGET_TABLE" not in off.resource("StreamingFunction")["Properties"]["Environment"]["Variables"]


def test_the_budget_table_and_defaults_reach_both_functions(stack: Stack) -> None:
    table = stack.resource("BudgetTable")["Properties"]
    assert table["KeySchema"] == [
        {"AttributeName": "caller", "KeyType": "HASH"},
        {"AttributeName": "period", "KeyType": "RANGE"},
    ]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST" and table["SSESpecification"] == {"SSEEnabled": True}
    for function_id in ("ChatFunction", "StreamingFunction"):
        variables = stack.resource(function_id)["Properties"]["Environment"]["Variables"]
        assert variables["BUDGET_TABLE"] == "<BudgetTable>"
        assert (variables["DEFAULT_DAILY_BUDGET_USD"], variables["DEFAULT_MONTHLY_BUDGET_USD"]) == ("2.5", "")
        assert variables["DEFAULT_MONTHLY_BUDGET_TOKENS"] == "1000000"
        assert (variables["BUDGET_FAIL_MODE"], variables["ALLOW_UNPRICED_MODELS"]) == ("closed", "false")


def test_the_authorizer_role_is_basic_logging_only(stack: Stack) -> None:
    # When the authorizer's role is read, Then it is the basic logging policy and nothing else (not even X-Ray)
    aws_managed, statements = role_statements(stack, "KeyAuthorizerFunctionRole")
    assert aws_managed == [BASIC_LOGGING]
    assert statements == []


@pytest.mark.parametrize("function_id", ["ChatFunction", "StreamingFunction", "KeyAuthorizerFunction"])
def test_each_function_logs_to_its_own_group_with_the_retention_parameter(stack: Stack, function_id: str) -> None:
    group = stack.resource(function_id)["Properties"]["LoggingConfig"]["LogGroup"]
    assert group == f"<{function_id}LogGroup>"
    retention = stack.resource(f"{function_id}LogGroup")["Properties"]["RetentionInDays"]
    assert retention == stack.parameters["LogRetentionDays"]


def test_the_openai_base_url_output_says_how_to_send_the_key(stack: Stack) -> None:
    output = stack.value(stack.template["Outputs"]["OpenAICompatibleBaseUrl"])
    assert output["Value"].endswith("/Prod/v1")
    assert "Bearer" in output["Description"] and "x-api-key" in output["Description"]


def test_run_sh_starts_the_asgi_app_and_is_executable() -> None:
    run_sh = ROOT / "src" / "run.sh"
    assert os.access(run_sh, os.X_OK)
    text = run_sh.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert "exec python3 -m lambda_chat.asgi" in text  # its main() runs uvicorn on 127.0.0.1:$PORT


# -- issue 18: what deployed without an error but misbehaved ---------------------------------------------------


def test_eventbridge_failures_go_to_the_chat_failures_queue_and_sam_makes_no_queue_of_its_own(stack: Stack) -> None:
    rule = stack.resource("ChatFunctionChatRequested")["Properties"]
    assert rule["Targets"][0]["DeadLetterConfig"] == {"Arn": "<ChatFailuresQueue.Arn>"}
    assert [logical_id for logical_id, _ in stack.resources_of("AWS::SQS::Queue")] == ["ChatFailuresQueue"]


def test_cloudwatch_may_publish_to_the_alarm_topic(stack: Stack) -> None:
    # Given the topic's key (the AWS-managed SNS key's policy cannot let CloudWatch use it)
    topic = stack.resource("AlarmTopic")["Properties"]
    assert topic["KmsMasterKeyId"] == "<AlarmTopicKey>"
    key = stack.resource("AlarmTopicKey")["Properties"]
    # Then its policy lets CloudWatch generate and decrypt data keys, and rotation is on
    allowed = [
        statement
        for statement in key["KeyPolicy"]["Statement"]
        if statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert len(allowed) == 1 and set(allowed[0]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert key["EnableKeyRotation"] is True
    # And every alarm publishes to the topic
    for logical_id in ("DailyCostAlarm", "ErrorRateAlarm", "ThrottlesAlarm"):
        assert stack.resource(logical_id)["Properties"]["AlarmActions"] == ["<AlarmTopic>"]


def test_the_state_machine_invokes_the_live_alias_with_the_recommended_retries(stack: Stack) -> None:
    machine = stack.resource("ExampleStateMachine")["Properties"]
    definition = json.loads("\n".join(machine["DefinitionString"]["Fn::Join"][1]))
    task = definition["States"]["Complete"]
    substitution = task["Parameters"]["FunctionName"].strip("${}")
    assert machine["DefinitionSubstitutions"][substitution] == "<ChatFunctionAliaslive>"
    assert set(task["Retry"][0]["ErrorEquals"]) >= {
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "Lambda.ClientExecutionTimeoutException",
    }
    # And its role may invoke the alias only
    role = stack.resource("ExampleStateMachineRole")["Properties"]
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    assert statements == [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "<ChatFunctionAliaslive>"}]


def test_the_throttle_alarm_watches_both_functions(stack: Stack) -> None:
    alarm = stack.resource("ThrottlesAlarm")["Properties"]
    watched = {
        query["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
        for query in alarm["Metrics"]
        if "MetricStat" in query and query["MetricStat"]["Metric"]["MetricName"] == "Throttles"
    }
    assert watched == {"<ChatFunction>", "<StreamingFunction>"}
    summed = [query for query in alarm["Metrics"] if query.get("ReturnData")]
    assert len(summed) == 1 and "chat" in summed[0]["Expression"] and "streaming" in summed[0]["Expression"]


def test_with_tracing_off_no_role_may_write_to_x_ray() -> None:
    # Given the template rendered with the default, TracingMode=Disabled
    plain = render({})
    for role_id in ("ChatFunctionRole", "StreamingFunctionRole"):
        aws_managed, _ = role_statements(plain, role_id)
        # Then no role holds the X-Ray policy, and the functions are not traced
        assert XRAY_WRITE not in aws_managed
    for function_id in ("ChatFunction", "StreamingFunction"):
        assert "TracingConfig" not in plain.resource(function_id)["Properties"]
    assert plain.resource("ChatFunction")["Properties"]["Environment"]["Variables"]["TRACING_ENABLED"] == "false"
