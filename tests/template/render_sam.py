"""Print template.yaml as CloudFormation JSON, transformed by aws-sam-translator offline (no AWS call).

Run with the SAM CLI's Python (.local/sam-venv), which holds the translator `sam validate` uses:
    .local/sam-venv/bin/python tests/template/render_sam.py template.yaml '{"OpenAIApiTimeoutSeconds": "600"}'
The template is parsed as `sam validate` parses it; local CodeUris become fake S3 URIs, as `sam validate` does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from samcli.yamlhelper import yaml_parse
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator


class _NoAws:
    """Stands in for a boto3 session: the transform may ask for the region and the partition, nothing else."""

    region_name = "us-east-1"

    def get_partition_for_region(self, region: str) -> str:
        return "aws"


def render(template_path: str, parameters: dict[str, Any]) -> dict[str, Any]:
    template = yaml_parse(Path(template_path).read_text())
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(
            resource.get("Properties", {}).get("CodeUri"), str
        ):
            resource["Properties"]["CodeUri"] = "s3://render-bucket/code.zip"
    translator = Translator(managed_policy_map=None, sam_parser=Parser(), plugins=[], boto_session=_NoAws())
    values = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws", **parameters}
    rendered: dict[str, Any] = translator.translate(
        sam_template=template, parameter_values=values, get_managed_policy_map=lambda: {}
    )
    return rendered


if __name__ == "__main__":
    print(json.dumps(render(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}), default=str))
