"""The state machine definition out of a synthesized template, with its `${...}` substitutions filled in.

In the template, AWS::StepFunctions::StateMachine's DefinitionString is one plain JSON string holding
`${Bucket}`, `${SageMakerRoleArn}`, `${SourceDirUri}`, `${Region}`, `${TrainingImage}`,
`${InferenceImage}` and (Debugger on) `${RuleEvaluatorImage}`; DefinitionSubstitutions maps each to a
CloudFormation intrinsic (Ref, Fn::GetAtt, Fn::Sub, Fn::FindInMap). Local mode passes its own value for any of
them (e.g. its bucket name); the rest are resolved here the way CloudFormation would, for a given
region/account/partition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

STATE_MACHINE_TYPE = "AWS::StepFunctions::StateMachine"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def state_machine_resource(template: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's state machine: the one whose definition takes DefinitionSubstitutions (the teardown's
    custom-resource Provider adds a completion-polling state machine of its own, which takes none)."""
    found = [r for r in template.get("Resources", {}).values() if r.get("Type") == STATE_MACHINE_TYPE
             and "DefinitionSubstitutions" in r.get("Properties", {})]
    if len(found) != 1:
        raise ValueError(f"expected one {STATE_MACHINE_TYPE} in the template, found {len(found)}")
    return found[0]


class Resolver:
    """Evaluates the intrinsic functions CDK puts in DefinitionSubstitutions."""

    def __init__(self, template: Mapping[str, Any], *, region: str, account: str, partition: str,
                 refs: Mapping[str, str] | None = None) -> None:
        self.template = template
        self.pseudo = {"AWS::Region": region, "AWS::AccountId": account, "AWS::Partition": partition,
                       "AWS::URLSuffix": "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com",
                       "AWS::StackName": "local", "AWS::NoValue": ""}
        self.refs = dict(refs or {})

    def ref(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        return self.refs.get(name, name.lower())  # a resource's Ref (bucket name, ...): its logical id

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str | int | float | bool) or value is None:
            return value
        if isinstance(value, list):
            return [self(v) for v in value]
        (fn, arg), = value.items()
        if fn == "Ref":
            return self.ref(arg)
        if fn == "Fn::GetAtt":
            logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self.refs.get(f"{logical_id}.{attribute}",
                                 f"arn:{self.pseudo['AWS::Partition']}:local:::{logical_id}/{attribute}")
        if fn == "Fn::Join":
            sep, parts = arg
            return sep.join(str(self(p)) for p in parts)
        if fn == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self(arg[1]))
            return re.sub(r"\$\{([^}!]+)\}", lambda m: str(variables.get(m[1]) if m[1] in variables
                                                            else self(_sub_ref(m[1]))), text)
        if fn == "Fn::FindInMap":
            name, key1, key2 = (self(a) for a in arg)
            return self.template["Mappings"][name][key1][key2]
        if fn == "Fn::Select":
            index, items = arg
            return self(items)[int(self(index))]
        if fn == "Fn::Split":
            sep, text = arg
            return str(self(text)).split(sep)
        raise ValueError(f"unsupported intrinsic {fn} in DefinitionSubstitutions")


def _sub_ref(name: str) -> dict[str, Any]:
    return {"Fn::GetAtt": name.split(".", 1)} if "." in name else {"Ref": name}


def substitution_values(template: Mapping[str, Any], values: Mapping[str, str] | None = None, *,
                        region: str = "us-east-1", account: str = "000000000000", partition: str = "aws",
                        refs: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every DefinitionSubstitutions key -> its value: `values` win, the rest are resolved."""
    resolver = Resolver(template, region=region, account=account, partition=partition, refs=refs)
    subs = state_machine_resource(template)["Properties"].get("DefinitionSubstitutions", {})
    return {key: str(values[key]) if values and key in values else str(resolver(expr)) for key, expr in subs.items()}


def definition_string(template: Mapping[str, Any], values: Mapping[str, str] | None = None, **kwargs: Any) -> str:
    """The definition exactly as Step Functions would receive it after CloudFormation's substitution."""
    props = state_machine_resource(template)["Properties"]
    text = props["DefinitionString"]
    if not isinstance(text, str):  # a definition with tokens left in it (not what infra synthesizes)
        text = Resolver(template, region=kwargs.get("region", "us-east-1"),
                        account=kwargs.get("account", "000000000000"), partition=kwargs.get("partition", "aws"),
                        refs=kwargs.get("refs"))(text)
    subs = substitution_values(template, values, **kwargs)
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(subs))
    if missing:
        raise ValueError(f"definition placeholders without a substitution: {missing}")
    return _PLACEHOLDER.sub(lambda m: json.dumps(subs[m[1]])[1:-1], text)  # JSON-safe, as text


def definition(template: Mapping[str, Any], values: Mapping[str, str] | None = None, **kwargs: Any) -> dict:
    return json.loads(definition_string(template, values, **kwargs))
