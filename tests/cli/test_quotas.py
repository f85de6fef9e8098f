"""`imgclf start` compares the run's instances with the account's SageMaker quotas (Service Quotas through botocore's
Stubber: the response shapes are botocore's own) and refuses, in one line, a run SageMaker would refuse later."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import pytest
from botocore.stub import Stubber

import stackfacts as facts
from cli import quotas
from cli.main import main
from tests.support.cli import BUCKET, REGION, STACK, STATE_MACHINE, Scenario, Stubs

GPU = "ml.g4dn.xlarge"
CAPACITY = {facts.OUTPUT_TUNING_INSTANCE_TYPE: GPU, facts.OUTPUT_TUNING_PARALLEL: "2",
            facts.OUTPUT_TRAINING_INSTANCE_TYPE: GPU, facts.OUTPUT_TRAINING_INSTANCE_COUNT: "1",
            facts.OUTPUT_TRAINING_SPOT: "false"}


def _quota(name: str, value: float, code: str) -> dict:
    return {"ServiceCode": "sagemaker", "ServiceName": "Amazon SageMaker", "QuotaName": name, "QuotaCode": code,
            "QuotaArn": f"arn:aws:servicequotas:{REGION}:123456789012:sagemaker/{code}", "Value": value,
            "Unit": "None", "Adjustable": True, "GlobalQuota": False}


@pytest.fixture
def service_quotas():
    client = boto3.Session(aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                           region_name=REGION).client("service-quotas")
    with Stubber(client) as stubber:
        yield client, stubber


def _start(stubs: Stubs, client, capsys, argv: list[str], outputs: dict[str, str]) -> tuple[int, str, str]:
    scenario = Scenario()
    base = {facts.OUTPUT_BUCKET: BUCKET, facts.OUTPUT_DATASET: f"s3://{BUCKET}/data/",
            facts.OUTPUT_STATE_MACHINE: STATE_MACHINE}
    stubs.add("cloudformation", "describe_stacks", scenario.describe_stacks({**base, **outputs}), {"StackName": STACK})

    def backend(_args):
        b = stubs.backend()
        b.servicequotas = client
        return b

    code = main(["start", *argv], backend_factory=backend)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _expect_started(stubs: Stubs, document: dict) -> None:
    started = {"executionArn": STATE_MACHINE + ":x", "startDate": dt.datetime.now()}
    stubs.add("stepfunctions", "start_execution", started,
              {"stateMachineArn": STATE_MACHINE, "input": json.dumps(document)})


def test_a_fresh_account_quota_refuses_the_run_before_it_starts(service_quotas, capsys):
    client, stubber = service_quotas
    stubs = Stubs(Scenario())
    # Two pages: the quota codes come from the service, never from this code.
    stubber.add_response("list_service_quotas", {"Quotas": [_quota("ml.m5.large for training job usage", 15, "L-A")],
                                                 "NextToken": "p2"}, {"ServiceCode": "sagemaker"})
    stubber.add_response("list_service_quotas", {"Quotas": [_quota(f"{GPU} for training job usage", 1, "L-G4")]},
                         {"ServiceCode": "sagemaker", "NextToken": "p2"})
    code, _, err = _start(stubs, client, capsys, [], CAPACITY)
    assert code == 1
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert f"'{GPU} for training job usage' is 1 in {REGION}" in line and "needs 2 (2 tuning trials at once)" in line
    assert "--quota-code L-G4 --desired-value 2" in line and "--parallel 1" in line
    stubs.assert_done()  # nothing started
    stubber.assert_no_pending_responses()


def test_a_run_within_the_quota_starts(service_quotas, capsys):
    client, stubber = service_quotas
    stubs = Stubs(Scenario())
    stubber.add_response("list_service_quotas", {"Quotas": [_quota(f"{GPU} for training job usage", 1, "L-G4")]},
                         {"ServiceCode": "sagemaker"})
    _expect_started(stubs, {facts.INPUT_MAX_PARALLEL_JOBS: 1})
    code, _, err = _start(stubs, client, capsys, ["--parallel", "1"], CAPACITY)
    assert code == 0, err
    stubs.assert_done()


def test_spot_training_has_its_own_quota_and_an_unoffered_type_is_named(service_quotas, capsys):
    client, stubber = service_quotas
    stubs = Stubs(Scenario())
    outputs = {**CAPACITY, facts.OUTPUT_TRAINING_INSTANCE_TYPE: "ml.p5.48xlarge", facts.OUTPUT_TRAINING_SPOT: "true"}
    stubber.add_response("list_service_quotas", {"Quotas": [_quota(f"{GPU} for training job usage", 4, "L-G4")]},
                         {"ServiceCode": "sagemaker"})
    stubber.add_response("list_aws_default_service_quotas", {"Quotas": [_quota(f"{GPU} for training job usage", 0,
                                                                               "L-G4")]},
                         {"ServiceCode": "sagemaker"})
    code, _, err = _start(stubs, client, capsys, [], outputs)
    assert code == 1
    assert f"SageMaker offers no ml.p5.48xlarge for spot training in {REGION}" in err
    assert "'ml.p5.48xlarge for spot training job usage'" in err


def test_unreadable_quotas_do_not_block_the_run(service_quotas, capsys):
    client, stubber = service_quotas
    stubs = Stubs(Scenario())
    stubber.add_client_error("list_service_quotas", "AccessDeniedException", "no servicequotas:ListServiceQuotas",
                             400, {"ServiceCode": "sagemaker"})
    _expect_started(stubs, {})
    code, _, err = _start(stubs, client, capsys, [], CAPACITY)
    assert code == 0 and "could not check the training-instance quotas" in err and "access denied" in err


def test_skip_and_older_stacks_make_no_quota_call(service_quotas, capsys):
    client, _ = service_quotas  # no response queued: any call would fail the test
    stubs = Stubs(Scenario())
    _expect_started(stubs, {})
    assert _start(stubs, client, capsys, ["--skip-quota-check"], CAPACITY)[0] == 0
    _expect_started(stubs, {})
    assert _start(stubs, client, capsys, [], {})[0] == 0  # a stack without the capacity outputs
    stubs.assert_done()


def test_phases_that_run_one_after_the_other_share_a_quota():
    same = quotas.needs({**CAPACITY, facts.OUTPUT_TRAINING_INSTANCE_COUNT: "3"}, parallel=2)
    assert [(n.quota, n.count) for n in same] == [(f"{GPU} for training job usage", 3)]


def test_spot_tuning_trials_need_the_spot_quota():
    """Review 4 R3: with tuning.spot every trial is a managed-spot job, counted against "<type> for spot training
    job usage"; the final job (on demand here) keeps the on-demand quota."""
    wanted = quotas.needs({**CAPACITY, facts.OUTPUT_TUNING_SPOT: "true"}, None)
    assert {(n.quota, n.count) for n in wanted} == {(f"{GPU} for spot training job usage", 2),
                                                    (f"{GPU} for training job usage", 1)}
    on_demand = quotas.needs({**CAPACITY, facts.OUTPUT_TUNING_SPOT: "false"}, 3)
    assert {(n.quota, n.count) for n in on_demand} == {(f"{GPU} for training job usage", 3)}
