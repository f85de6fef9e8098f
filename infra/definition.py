"""The one CloudFormation resolver: a synthesized template's intrinsics, and the state machine definition with its
`${...}` substitutions filled in, the way CloudFormation would, for a given region/account/partition.

Tests and local mode (`make demo`, `python -m local.demo --template PATH`) both read the stack through it.
In the template, AWS::StepFunctions::StateMachine's DefinitionString is one plain JSON string holding
`${Bucket}`, `${SageMakerRoleArn}`, `${SourceDirUri}`, `${Region}`, `${TrainingImage}`,
`${InferenceImage}` and (Debugger on) `${RuleEvaluatorImage}`; DefinitionSubstitutions maps each to a
CloudFormation intrinsic (Ref, Fn::GetAtt, Fn::Sub, Fn::FindInMap). A caller passes its own value for any of them
(e.g. local mode's bucket name); the rest are resolved here.

Strict where CloudFormation would fail: a `${...}` placeholder without a substitution, a Ref or Fn::GetAtt to
nothing, a Fn::Sub variable that names nothing and an intrinsic this resolver does not implement (Fn::If, ...)
are errors (ValueError), never text left in or guessed. Substituted values are JSON-escaped, so a value holding
a quote or backslash cannot break the definition's JSON.
Intrinsic functions: https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/intrinsic-function-reference.html
DefinitionSubstitutions: https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-stepfunctions-statemachine.html
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import stackfacts as facts

STATE_MACHINE_TYPE = "AWS::StepFunctions::StateMachine"
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")  # any ${...}: one no substitution names is an error
_BUCKET_CHARS = re.compile(r"[^a-z0-9.-]+")


# The name property per resource type: what Ref returns when the template sets it.
_NAME_PROPERTIES = {"AWS::S3::Bucket": "BucketName", "AWS::IAM::Role": "RoleName",
                    "AWS::Lambda::Function": "FunctionName", STATE_MACHINE_TYPE: "StateMachineName",
                    "AWS::SageMaker::Model": "ModelName", "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
                    "AWS::Logs::LogGroup": "LogGroupName"}
# Ref of these types returns the ARN, not the name (the "Return values" section of each resource's page, e.g.
# https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-stepfunctions-statemachine.html#aws-resource-stepfunctions-statemachine-return-values).
_REF_IS_ARN = {STATE_MACHINE_TYPE, "AWS::IAM::ManagedPolicy", "AWS::SNS::Topic"}


def state_machine_resource(template: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's state machine: the one whose definition takes DefinitionSubstitutions (the teardown's
    custom-resource Provider adds a completion-polling state machine of its own, which takes none)."""
    found = [r for r in template.get("Resources", {}).values() if r.get("Type") == STATE_MACHINE_TYPE
             and "DefinitionSubstitutions" in r.get("Properties", {})]
    if len(found) != 1:
        raise ValueError(f"expected one {STATE_MACHINE_TYPE} in the template, found {len(found)}")
    return found[0]


class Resolver:
    """Evaluates the intrinsic functions CDK synthesizes: Ref, Fn::GetAtt, Fn::Join, Fn::Sub, Fn::FindInMap,
    Fn::Select, Fn::Split. Resources get stable local physical names (their name property when the template sets
    one, else `<stack>-<logical id>`), unless `refs` names them ({logical id: Ref value} or
    {"LogicalId.Attribute": value}); template parameters take `parameters`, else their Default."""

    def __init__(self, template: Mapping[str, Any], *, region: str = facts.LOCAL_REGION,
                 account: str = facts.LOCAL_ACCOUNT, partition: str = "aws", stack_name: str = "local",
                 refs: Mapping[str, str] | None = None, parameters: Mapping[str, str] | None = None) -> None:
        self.template = template
        self.resources: Mapping[str, Any] = template.get("Resources", {})
        self.region, self.account, self.partition, self.stack_name = region, account, partition, stack_name
        self.pseudo: dict[str, Any] = {
            "AWS::Region": region, "AWS::AccountId": account, "AWS::Partition": partition,
            "AWS::URLSuffix": "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com",
            "AWS::StackName": stack_name,
            "AWS::StackId": f"arn:{partition}:cloudformation:{region}:{account}:stack/{stack_name}/local",
            "AWS::NoValue": None}
        self.refs = dict(refs or {})
        self.parameters = dict(parameters or {})

    # --- physical names and attributes ---------------------------------------------------------------------------
    def name(self, logical_id: str) -> str:
        """A resource's physical name: its name property when set, else a stable local name."""
        if logical_id in self.refs:
            return self.refs[logical_id]
        resource = self._resource(logical_id)
        kind, props = resource.get("Type", ""), resource.get("Properties", {})
        name_property = _NAME_PROPERTIES.get(kind)
        if name_property and name_property in props:
            return str(self(props[name_property]))
        if kind == "AWS::S3::Bucket":  # bucket names: lower case, digits, dots, hyphens, 63 at most
            return _BUCKET_CHARS.sub("-", f"{self.stack_name}-{logical_id}".lower()).strip("-")[:63]
        return f"{self.stack_name}-{logical_id}"[:64]

    def attribute(self, logical_id: str, attribute: str) -> str:
        """Fn::GetAtt for the attributes CDK reads of the types this stack has; anything else is an error."""
        key = f"{logical_id}.{attribute}"
        if key in self.refs:
            return self.refs[key]
        kind = self._resource(logical_id).get("Type", "")
        name = self.name(logical_id)
        p, r, a = self.partition, self.region, self.account
        if attribute == "Arn":
            arns = {"AWS::IAM::Role": f"arn:{p}:iam::{a}:role/{name}",
                    "AWS::S3::Bucket": f"arn:{p}:s3:::{name}",
                    "AWS::Lambda::Function": f"arn:{p}:lambda:{r}:{a}:function:{name}",
                    STATE_MACHINE_TYPE: f"arn:{p}:states:{r}:{a}:stateMachine:{name}",
                    "AWS::SNS::Topic": f"arn:{p}:sns:{r}:{a}:{name}",
                    "AWS::SQS::Queue": f"arn:{p}:sqs:{r}:{a}:{name}",
                    # with ":*" (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-logs-loggroup.html#aws-resource-logs-loggroup-return-values)
                    "AWS::Logs::LogGroup": f"arn:{p}:logs:{r}:{a}:log-group:{name}:*"}
            if kind in arns:
                return arns[kind]
        if kind == "AWS::S3::Bucket" and attribute == "DomainName":
            return f"{name}.s3.{self.pseudo['AWS::URLSuffix']}"
        if kind == "AWS::S3::Bucket" and attribute == "RegionalDomainName":
            return f"{name}.s3.{r}.{self.pseudo['AWS::URLSuffix']}"
        if attribute == "Name" and kind == STATE_MACHINE_TYPE:
            return name
        raise ValueError(f"Fn::GetAtt {logical_id}.{attribute}: attribute {attribute!r} of {kind or 'a resource'} "
                         "is not supported by this resolver")

    def ref(self, target: str) -> Any:
        if target in self.pseudo:
            return self.pseudo[target]
        if target in self.parameters:
            return self.parameters[target]
        if target in self.template.get("Parameters", {}):
            default = self.template["Parameters"][target].get("Default")
            if default is None:
                raise ValueError(f"template parameter {target!r} has no default: pass parameters={{...}}")
            return default
        if target in self.refs:
            return self.refs[target]
        kind = self._resource(target).get("Type", "")
        if kind in _REF_IS_ARN:
            return self.attribute(target, "Arn") if kind != "AWS::IAM::ManagedPolicy" else \
                f"arn:{self.partition}:iam::{self.account}:policy/{self.name(target)}"
        return self.name(target)

    def _resource(self, logical_id: str) -> Mapping[str, Any]:
        resource = self.resources.get(logical_id)
        if resource is None:
            raise ValueError(f"reference to {logical_id!r}, which is no parameter, pseudo parameter or resource "
                             "of the template")
        return resource

    # --- intrinsic functions -------------------------------------------------------------------------------------
    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (fn, arg), = value.items()
            if fn == "Ref":
                return self.ref(arg)
            if fn == "Fn::GetAtt":
                logical_id, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.attribute(logical_id, self(attribute))
            if fn == "Fn::Join":
                separator, items = arg
                return separator.join(str(v) for v in self(items) if v is not None)  # AWS::NoValue drops out
            if fn == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self(arg[1]))
                return self._sub(text, variables)
            if fn == "Fn::FindInMap":
                name, key1, key2 = (self(a) for a in arg)
                try:
                    return self.template["Mappings"][name][key1][key2]
                except KeyError:
                    raise ValueError(f"Fn::FindInMap: no {name}/{key1}/{key2} in the template's Mappings") from None
            if fn == "Fn::Select":
                index, items = arg
                return self(items)[int(self(index))]
            if fn == "Fn::Split":
                separator, text = arg
                return str(self(text)).split(separator)
            if fn.startswith("Fn::") or fn == "Condition":
                raise ValueError(f"unsupported intrinsic {fn}: this resolver implements Ref, Fn::GetAtt, Fn::Join, "
                                 "Fn::Sub, Fn::FindInMap, Fn::Select and Fn::Split")
        return {k: self(v) for k, v in value.items()}

    resolve = __call__

    def _sub(self, text: str, variables: Mapping[str, Any]) -> str:
        def replace(match: re.Match) -> str:
            key = match[1]
            if key.startswith("!"):  # ${!Literal} stays ${Literal}
                return "${" + key[1:] + "}"
            if key in variables:
                return str(variables[key])
            if "." in key and not key.startswith("AWS::"):
                return self.attribute(*key.split(".", 1))
            return str(self.ref(key))

        return _PLACEHOLDER.sub(replace, text)

    # --- the stack's outputs and its state machine ---------------------------------------------------------------
    def outputs(self) -> dict[str, Any]:
        return {key: self(output["Value"]) for key, output in self.template.get("Outputs", {}).items()}

    def substitution_values(self, values: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every DefinitionSubstitutions key -> its value: `values` win, the rest are resolved."""
        subs = state_machine_resource(self.template)["Properties"].get("DefinitionSubstitutions", {})
        return {key: str(values[key]) if values and key in values else str(self(expr)) for key, expr in subs.items()}

    def definition_string(self, values: Mapping[str, str] | None = None) -> str:
        """The definition exactly as Step Functions would receive it after CloudFormation's substitution."""
        props = state_machine_resource(self.template)["Properties"]
        # DefinitionString: a plain string, or Fn::Join pieces of the JSON text; Definition: the JSON itself.
        text = json.dumps(self(props["Definition"])) if "Definition" in props else self(props["DefinitionString"])
        subs = self.substitution_values(values)
        missing = sorted(set(_PLACEHOLDER.findall(text)) - set(subs))
        if missing:
            raise ValueError(f"definition placeholders without a substitution: {missing}")
        return _PLACEHOLDER.sub(lambda m: json.dumps(subs[m[1]])[1:-1], text)  # JSON-safe, as text

    def definition(self, values: Mapping[str, str] | None = None) -> dict:
        return json.loads(self.definition_string(values))


def substitution_values(template: Mapping[str, Any], values: Mapping[str, str] | None = None,
                        **kwargs: Any) -> dict[str, str]:
    return Resolver(template, **kwargs).substitution_values(values)


def definition_string(template: Mapping[str, Any], values: Mapping[str, str] | None = None, **kwargs: Any) -> str:
    return Resolver(template, **kwargs).definition_string(values)


def definition(template: Mapping[str, Any], values: Mapping[str, str] | None = None, **kwargs: Any) -> dict:
    return Resolver(template, **kwargs).definition(values)
