"""The pure read-model: one reading of an execution's history into states (the engine, the read-model and the demo
use it alike)."""

from __future__ import annotations

import datetime as dt

from cli.model import execution_from, history_states

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _event(kind: str, seconds: float, name: str | None = None, iso: bool = False, **details: dict) -> dict:
    at = T0 + dt.timedelta(seconds=seconds)
    event: dict = {"type": kind, "timestamp": at.isoformat() if iso else at, **details}
    if name is not None:
        key = "stateEnteredEventDetails" if kind.endswith("StateEntered") else "stateExitedEventDetails"
        event[key] = {"name": name}
    return event


def _history(iso: bool = False) -> list[dict]:
    return [
        {"type": "ExecutionStarted", "timestamp": T0, "executionStartedEventDetails": {"input": "{}"}},
        _event("TaskStateEntered", 1, "Find endpoint", iso),
        _event("TaskFailed", 2, iso=iso, taskFailedEventDetails={"error": "SageMaker.ValidationException"}),
        _event("TaskStateExited", 3, "Find endpoint", iso),  # left through its Catch
        _event("PassStateEntered", 3, "Count", iso),
        _event("PassStateExited", 4, "Count", iso),
        _event("PassStateEntered", 5, "Count", iso),  # a loop: a second visit
        _event("PassStateExited", 7, "Count", iso),
        _event("TaskStateEntered", 8, "Train", iso),
        _event("TaskFailed", 20, iso=iso, taskFailedEventDetails={"error": "States.TaskFailed"}),
    ]


def test_visits_in_order_with_their_outcome():
    visits = history_states(_history())
    assert [(v.name, v.type, v.status) for v in visits] == [
        ("Find endpoint", "Task", "caught"), ("Count", "Pass", "succeeded"), ("Count", "Pass", "succeeded"),
        ("Train", "Task", "failed")]
    assert [v.seconds for v in visits] == [2.0, 1.0, 2.0, None]


def test_engine_text_timestamps_read_the_same():
    """The local engine's events carry ISO 8601 text, boto3's datetimes: the same visits and durations."""
    assert history_states(_history(iso=True)) != history_states(_history())  # the timestamps differ in form...
    assert [(v.name, v.status, v.seconds) for v in history_states(_history(iso=True))] == \
        [(v.name, v.status, v.seconds) for v in history_states(_history())]  # ...not in what they say


def test_the_read_model_reads_states_through_history_states():
    described = {"executionArn": "arn:aws:states:us-east-1:123456789012:execution:sm:run", "status": "RUNNING",
                 "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:sm", "startDate": T0}
    running = execution_from(described, _history())
    assert running.current_state == running.last_state == "Train"
    assert running.state_seconds == {"Find endpoint": 2.0, "Count": 3.0}  # both visits of the loop summed
    failed = execution_from({**described, "status": "FAILED"}, _history())
    assert failed.current_state is None and failed.last_state == "Train"
    done = execution_from(described, _history()[:-2])
    assert done.current_state is None and done.last_state == "Count"
