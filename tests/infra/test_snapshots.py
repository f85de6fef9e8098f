"""Snapshots (syrupy) of what a reviewer must see change: the state machine definition as Step Functions receives it
(substitutions resolved) and every IAM policy document of the template, for the default deploy and the variant.

A change to the flow or to a permission fails here until the snapshot is regenerated, so the diff of
tests/infra/__snapshots__/ shows it in review. After an intended change:

    .venv/bin/python -m pytest tests/infra/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

# Asset hashes (the sourcedir and Lambda bundles) change with every code edit: not a change of flow or permission.
_ASSET_HASH = re.compile(r"\b[0-9a-f]{64}\b")
# IAM documents per resource type: where CloudFormation carries them (AWS::IAM::* resource reference).
POLICY_PROPERTIES = {
    "AWS::IAM::Role": ("AssumeRolePolicyDocument", "Policies"),
    "AWS::IAM::Policy": ("PolicyDocument", "Roles", "Users", "Groups"),
    "AWS::IAM::ManagedPolicy": ("PolicyDocument", "Roles"),
    "AWS::S3::BucketPolicy": ("Bucket", "PolicyDocument"),
    "AWS::Lambda::Permission": ("Action", "FunctionName", "Principal", "SourceArn"),
}


def _stable(value: Any) -> Any:
    return json.loads(_ASSET_HASH.sub("<asset-hash>", json.dumps(value)))


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("synth_name", ["cloud", "variant"])
def test_state_machine_definition(request, synth_name, snapshot_json):
    synth = request.getfixturevalue(synth_name)
    assert _stable(synth.definition) == snapshot_json


@pytest.mark.parametrize("synth_name", ["cloud", "variant"])
def test_iam_policy_documents(request, synth_name, snapshot_json):
    synth = request.getfixturevalue(synth_name)
    documents = {}
    for logical_id, resource in sorted(synth.template["Resources"].items()):
        keys = POLICY_PROPERTIES.get(resource["Type"])
        if keys:
            props = resource.get("Properties", {})
            documents[logical_id] = {"Type": resource["Type"], **{k: props[k] for k in keys if k in props}}
    assert documents, "no IAM documents found"
    assert _stable(documents) == snapshot_json
