"""cfn-lint on the synthesized templates (its Python API), for the regions each one deploys to."""

from __future__ import annotations

import json

import pytest
from cfnlint.api import lint

# The one cfn-lint finding kept: CDK makes a function / the state machine DependsOn its role *and* the role's
# DefaultPolicy so the policy exists before first use; the role half duplicates the GetAtt (W3005).
KEPT = "W3005"


def _lint(synth, regions):
    matches = lint(json.dumps(synth.template), regions=regions)
    kept = [m for m in matches if m.rule.id == KEPT and "Role" in str(m)]
    return [str(m) for m in matches if m not in kept]


@pytest.mark.parametrize(("name", "regions"), [
    ("cloud", ["us-east-1", "eu-west-1", "ap-northeast-1"]),
    ("local", ["us-east-1"]),
    ("variant", ["eu-west-1"]),
])
def test_cfn_lint_clean(request, name, regions):
    synth = request.getfixturevalue(name)
    assert _lint(synth, regions) == []
