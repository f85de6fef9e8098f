"""infra/common.py: log groups."""

from __future__ import annotations

from infra.common import VENDED_LOGS_PREFIX


def test_state_machine_logs_under_vended_logs(any_synth):
    """Step Functions' log delivery adds the group to CloudWatch Logs' account-wide resource policy (5,120
    characters) unless its name starts with /aws/vendedlogs/; busy accounts would otherwise fail the deploy."""
    destination = any_synth.state_machine["Properties"]["LoggingConfiguration"]["Destinations"][0]
    (group_id, _) = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"]
    name = any_synth.template["Resources"][group_id]["Properties"]["LogGroupName"]
    head, tail = name["Fn::Join"][1]
    assert VENDED_LOGS_PREFIX == "/aws/vendedlogs/states/"
    assert head == f"{VENDED_LOGS_PREFIX}{any_synth.config.state_machine_name}-"
    # The stack's own id ends the name: a group retained by `cdk destroy` never blocks a new deploy.
    assert tail == {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}


def test_every_state_machine_of_the_stack_logs_under_vended_logs(any_synth):
    """The rule holds for the teardown's completion poller (Provider framework) too, not only the pipeline."""
    machines = any_synth.resources("AWS::StepFunctions::StateMachine")
    assert len(machines) == (2 if any_synth.config.teardown_on_destroy else 1)
    for lid, machine in machines.items():
        destination = machine["Properties"]["LoggingConfiguration"]["Destinations"][0]
        (group_id, _) = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"]
        name = any_synth.template["Resources"][group_id]["Properties"]["LogGroupName"]
        assert name["Fn::Join"][1][0].startswith(VENDED_LOGS_PREFIX), lid
