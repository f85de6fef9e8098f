"""run_definition(time_scale=): Wait states and Retry intervals take a fraction of their time; the run is the same."""

from __future__ import annotations

import time

import pytest

from infra.pipeline import SDK_ERROR
from local.engine import run_definition
from local.sagemaker import SageMakerError
from tests.support.scripted import ScriptedSageMaker

WAIT_S, INTERVAL_S = 40, 20


def _definition() -> dict:
    """A Wait of WAIT_S, then a describe that is throttled twice, retried after INTERVAL_S and 2 x INTERVAL_S."""
    return {"StartAt": "Wait", "States": {
        "Wait": {"Type": "Wait", "Seconds": WAIT_S, "Next": "Describe"},
        "Describe": {"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:sagemaker:describeEndpoint",
                     "Parameters": {"EndpointName": "e"}, "ResultSelector": {"status.$": "$.EndpointStatus"},
                     "Retry": [{"ErrorEquals": [SDK_ERROR], "IntervalSeconds": INTERVAL_S,
                                "MaxAttempts": 2, "BackoffRate": 2.0}],
                     "End": True}}}


def _sagemaker() -> ScriptedSageMaker:
    throttles = [SageMakerError("ThrottlingException", "Rate exceeded")] * 2

    def describe(p: dict) -> dict:
        if throttles:
            raise throttles.pop()
        return {"EndpointName": p["EndpointName"], "EndpointStatus": "InService"}
    return ScriptedSageMaker(DescribeEndpoint=describe)


def test_a_scaled_run_takes_every_wait_and_retry_in_a_fraction_of_their_time():
    sm = _sagemaker()
    started = time.monotonic()
    result = run_definition(_definition(), {}, sm, poll_interval=0.05, timeout=60, time_scale=0.01)
    elapsed = time.monotonic() - started
    assert result.succeeded, (result.error, result.cause)
    assert result.output == {"status": "InService"}
    assert len(sm.ops("DescribeEndpoint")) == 3  # both retries were taken
    types = [e["type"] for e in result.events]
    assert "WaitStateEntered" in types and "WaitStateExited" in types
    # unscaled, the wait and the two intervals are 40 + 20 + 40 s; a hundredth of that is under 1 s
    assert elapsed < (WAIT_S + 3 * INTERVAL_S) / 4, elapsed


def test_the_scale_ends_with_its_run():
    """A later run at the default scale waits in full (checked on the wait alone, stopped early)."""
    run_definition(_definition(), {}, _sagemaker(), poll_interval=0.05, timeout=60, time_scale=0.01)
    started = time.monotonic()
    result = run_definition({"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 2, "End": True}}},
                            {}, None, poll_interval=0.05, timeout=60)
    assert result.succeeded and time.monotonic() - started >= 2


@pytest.mark.parametrize("scale", [0, -1, 1.5])
def test_a_scale_outside_0_1_is_refused(scale):
    with pytest.raises(ValueError, match="time_scale"):
        run_definition(_definition(), {}, _sagemaker(), time_scale=scale)
