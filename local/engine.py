"""Run a Step Functions definition on this machine: moto's ASL interpreter, SageMaker tasks served locally.

    from infra.definition import Resolver
    from local.engine import run_definition
    definition = Resolver(infra.synth_template({"profile": "local"}), account=DEFAULT_ACCOUNT).definition()
    result = run_definition(definition, {"...": "..."}, sagemaker, on_event=print)
    result.status, result.output, result.error, result.cause, result.events

moto's interpreter (the one LocalStack wrote) runs with real execution switched on (`mock_aws(config=...)`, in
process). It lists SageMaker as unsupported, so the factory it calls for every Task state is replaced while a run
is in progress: `arn:aws:states:::sagemaker:<action>[.sync]` and `arn:aws:states:::aws-sdk:sagemaker:<action>` go
to a LocalSageMaker; every other service keeps moto's own implementation. Errors carry the names Step Functions
gives them (optimised integration: SageMaker.AmazonSageMakerException; aws-sdk: SageMaker.<Exception>), a failed
or stopped .sync job fails its state with States.TaskFailed and the Describe* output as the cause, and a .sync
state that times out or is aborted stops its job. Paths yield what Step Functions yields (local/jsonpath.py), and
`time_scale` shortens Wait states and Retry intervals for runs against scripted answers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

import boto3
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import CustomErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import StatesErrorNameType
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import ResourceCondition
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
    StateTaskServiceAwsSdk,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_callback import (
    StateTaskServiceCallback,
)
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

import awsshapes
from cli.model import StateVisit, history_states
from local import jsonpath
from local.sagemaker import LocalSageMaker, SageMakerError
from local.sagemaker.api import DEFAULT_ACCOUNT, DEFAULT_REGION, service_model, to_json

# --- SageMaker task states -------------------------------------------------------------------------------------
# Step Functions' optimised SageMaker integration: these actions, .sync for the job-creating ones.
OPTIMISED_ACTIONS: Final[set[str]] = {
    "CreateEndpoint", "CreateEndpointConfig", "CreateHyperParameterTuningJob", "CreateLabelingJob", "CreateModel",
    "CreateProcessingJob", "CreateTrainingJob", "CreateTransformJob", "UpdateEndpoint",
}
# .sync: (name parameter, describe operation, status member, success status)
SYNC_JOBS: Final[dict[str, tuple[str, str, str, str]]] = {
    "CreateTrainingJob": ("TrainingJobName", "DescribeTrainingJob", "TrainingJobStatus", "Completed"),
    "CreateHyperParameterTuningJob": ("HyperParameterTuningJobName", "DescribeHyperParameterTuningJob",
                                      "HyperParameterTuningJobStatus", "Completed"),
}
STOP_OPERATIONS: Final[dict[str, str]] = {"CreateTrainingJob": "StopTrainingJob",
                                          "CreateHyperParameterTuningJob": "StopHyperParameterTuningJob"}
TERMINAL_JOB_STATUSES: Final[set[str]] = {"Completed", "Failed", "Stopped"}

_registry_lock = threading.RLock()
_standins: dict[str, LocalSageMaker] = {}  # state machine ARN -> the stand-in its SageMaker tasks call
# state machine ARN -> authorize(Task resource ARN, request): raises AccessDenied as IAM would (local.iam)
_authorizers: dict[str, Callable[..., None]] = {}  # (resource, params, *, stopping=False)
# state machine ARN -> the factor on its Wait states' and Retry intervals' wall-clock time (run_definition(time_scale=))
_time_scales: dict[str, float] = {}
_original_factory = state_task_factory.state_task_service_for
_original_retry = retrier_decl.RetrierDecl._eval_body
_original_wait = WaitFunction._wait_interval
_installed = 0


def _operation(action: str) -> str:
    """'createTrainingJob' -> 'CreateTrainingJob', checked against the SageMaker API."""
    operation = action[:1].upper() + action[1:]
    if operation not in service_model().operation_names:
        raise ValueError(f"SageMaker has no API action {action!r}")
    return operation


def _standin(env) -> LocalSageMaker:
    arn = env.states.context_object.context_object_data["StateMachine"]["Id"]
    with _registry_lock:
        sm = _standins.get(arn)
    if sm is None:
        raise RuntimeError(f"no local SageMaker registered for state machine {arn}")
    return sm


def _authorize(env, resource_arn: str, params: dict, *, stopping: bool = False) -> None:
    """IAM for the state machine role's calls of this Task, when the run enforces it (run_definition(authorize=));
    `stopping`: the Stop* call a .sync integration makes when its state is stopped or times out."""
    arn = env.states.context_object.context_object_data["StateMachine"]["Id"]
    with _registry_lock:
        authorize = _authorizers.get(arn)
    if authorize is not None:
        if stopping:
            authorize(resource_arn, params, stopping=True)
        else:
            authorize(resource_arn, params)


# --- compressed time --------------------------------------------------------------------------------------------
# A run against scripted answers needs no real time to pass: time_scale shortens every Wait state and Retry interval
# by a factor, while the interpreter still takes each wait and each retry, in order, into the history.
def _time_scale(env) -> float:
    arn = env.states.context_object.context_object_data["StateMachine"]["Id"]
    with _registry_lock:
        return _time_scales.get(arn, 1.0)


_retrying = threading.local()  # the scale of the Retry being evaluated on this thread (the interpreter's own)


class _RetryClock:
    """retrier_decl's `time` while runs are routed: its one sleep (the retry interval) follows the run's scale."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds * getattr(_retrying, "scale", 1.0))


def _scaled_retry(self, env) -> None:
    _retrying.scale = _time_scale(env)
    try:
        _original_retry(self, env)
    finally:
        _retrying.scale = 1.0


def _scaled_wait(self, env, wait_seconds: int) -> None:
    scale = _time_scale(env)
    if scale == 1.0:
        return _original_wait(self, env, wait_seconds)
    # moto's own re-waits whole seconds lost to an interrupt, which a fraction of a second never reaches; a stop
    # (program_state_event) ends the wait early, as it does there
    if wait_seconds > 0:
        env.program_state_event.wait(wait_seconds * scale)
    return None


def _aws_cause(exc: SageMakerError, service: str, separator: str) -> str:
    meta = exc.response["ResponseMetadata"]
    parts = [f"Service: {service}", f"Status Code: {meta['HTTPStatusCode']}", f"Error Code: {exc.code}",
             f"Request ID: {meta['RequestId']}"]
    return f"{exc.message} ({separator.join(parts)})"


class SageMakerTask(StateTaskServiceCallback):
    """`arn:aws:states:::sagemaker:<action>[.sync]`, served by the LocalSageMaker registered for the machine.

    Declares WaitForTaskToken as well as Sync: moto's callback code dereferences the task-token endpoint on .sync
    (design §3); .waitForTaskToken itself is refused when the definition is parsed, as Step Functions does.
    """

    def __init__(self) -> None:
        super().__init__(supported_integration_patterns={ResourceCondition.WaitForTaskToken, ResourceCondition.Sync})

    def _validate_service_integration_is_supported(self) -> None:
        operation = _operation(self.resource.api_action)
        if operation not in OPTIMISED_ACTIONS:
            raise ValueError(f"The resource provided {self.resource.resource_arn} not recognized: {operation} is not "
                             "an optimised SageMaker integration (use arn:aws:states:::aws-sdk:sagemaker:...)")
        condition = self.resource.condition
        if condition == ResourceCondition.Sync and operation not in SYNC_JOBS:
            raise ValueError(f"{self.resource.resource_arn}: .sync is not supported for {operation} locally")
        if condition not in (None, ResourceCondition.Sync):
            raise ValueError(f"{self.resource.resource_arn}: the .{condition} pattern is not supported for SageMaker")

    def _eval_service_task(self, env, resource_runtime_part, normalised_parameters: dict, state_credentials) -> None:
        _authorize(env, self.resource.resource_arn, normalised_parameters)
        response = _standin(env).call(_operation(self.resource.api_action), normalised_parameters)
        env.stack.append(to_json(response, timestamps="millis"))

    def _build_sync_resolver(self, env, resource_runtime_part, normalised_parameters: dict,
                             state_credentials) -> Callable[[], Any]:
        env.stack.pop()  # the create call's output: .sync answers with the job's final description instead
        sm = _standin(env)
        operation = _operation(self.resource.api_action)
        name_key, describe, status_key, success = SYNC_JOBS[operation]
        name = normalised_parameters[name_key]

        def resolve() -> Any | None:
            description = sm.call(describe, {name_key: name})
            status = description[status_key]
            if status not in TERMINAL_JOB_STATUSES:
                return None
            output = to_json(description, timestamps="millis")
            if status == success:
                return output
            raise FailureEventException(FailureEvent(
                env=env, error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                event_type=HistoryEventType.TaskFailed,
                event_details=EventDetails(taskFailedEventDetails=TaskFailedEventDetails(
                    resource=self._get_sfn_resource(), resourceType=self._get_sfn_resource_type(),
                    error=StatesErrorNameType.StatesTaskFailed.to_name(), cause=json.dumps(output)))))

        # for _eval_sync (a state object may run concurrently in a Map)
        vars(resolve)["job"] = (sm, operation, name_key, name)
        return resolve

    def _eval_sync(self, env, sync_resolver, timeout_seconds, callback_endpoint, heartbeat_endpoint) -> Any:
        # No task-token listener for .sync; and a state that ends without a result (TimeoutSeconds, StopExecution)
        # stops its job: a Step Functions timeout would not end a local training process.
        result = super()._eval_sync(env, sync_resolver, timeout_seconds, None, None)
        if result is None and getattr(sync_resolver, "job", None):
            sm, operation, name_key, name = sync_resolver.job
            try:  # Step Functions stops the job with the state machine's role (sagemaker-iam.html: Stop*)
                _authorize(env, self.resource.resource_arn, {name_key: name}, stopping=True)
            except SageMakerError:  # denied: the job runs on (and bills) as it would on AWS; the authorizer keeps it
                return result
            with contextlib.suppress(SageMakerError):  # already ended
                sm.call(STOP_OPERATIONS[operation], {name_key: name})
        return result

    def _from_error(self, env, ex: Exception) -> FailureEvent:
        if isinstance(ex, SageMakerError):
            error = "SageMaker.AmazonSageMakerException"
            return FailureEvent(env=env, error_name=CustomErrorName(error), event_type=HistoryEventType.TaskFailed,
                                event_details=EventDetails(taskFailedEventDetails=TaskFailedEventDetails(
                                    resource=self._get_sfn_resource(), resourceType=self._get_sfn_resource_type(),
                                    error=error, cause=_aws_cause(ex, "AmazonSageMaker", "; "))))
        return super()._from_error(env=env, ex=ex)


class AwsSdkTask(StateTaskServiceAwsSdk):
    """`arn:aws:states:::aws-sdk:<service>:<action>`: SageMaker to the stand-in, any other service to moto."""

    # Step Functions' aws-sdk service names that botocore spells otherwise (moto maps only sfn/states).
    _SERVICE_NAME_SFN_TO_BOTO_OVERRIDES: ClassVar[dict[str, str]] = {
        **StateTaskServiceAwsSdk._SERVICE_NAME_SFN_TO_BOTO_OVERRIDES, **awsshapes.BOTOCORE_NAMES}

    # The SDK's service names in aws-sdk error names (SageMaker.AmazonSageMakerException, ...).
    _SERVICE_NAMES: ClassVar[dict[str, str]] = {"applicationautoscaling": "ApplicationAutoScaling"}

    def _is_sagemaker(self) -> bool:
        return self.resource.api_name.lower() == "sagemaker"

    def _eval_service_task(self, env, resource_runtime_part, normalised_parameters: dict, state_credentials) -> None:
        _authorize(env, self.resource.resource_arn, normalised_parameters)
        if not self._is_sagemaker():
            super()._eval_service_task(env, resource_runtime_part, normalised_parameters, state_credentials)
            return
        response = _standin(env).call(_operation(self.resource.api_action), normalised_parameters)
        env.stack.append(to_json(response, timestamps="iso"))

    def _from_error(self, env, ex: Exception) -> FailureEvent:
        if isinstance(ex, SageMakerError) and self._is_sagemaker():
            # Step Functions names aws-sdk errors after the SDK's exception class: modelled errors keep their name
            # (ResourceNotFound -> SageMaker.ResourceNotFoundException), the rest are SageMaker.SageMakerException.
            modelled = {shape.name for shape in service_model().error_shapes}
            name = ex.code if ex.code in modelled else "SageMaker"
            error = f"SageMaker.{name}" if name.endswith("Exception") else f"SageMaker.{name}Exception"
            return self._get_task_failure_event(env=env, error=error, cause=_aws_cause(ex, "SageMaker", ", "))
        if isinstance(ex, SageMakerError):  # a local IAM denial of another service's call (local.iam.AccessDenied)
            # aws-sdk errors are "<service>.<exception>" (supported-services-awssdk.html, "Handling errors").
            service = self._SERVICE_NAMES.get(self.resource.api_name.lower(), self.resource.api_name)
            code = ex.code if ex.code.endswith("Exception") else f"{ex.code}Exception"
            return self._get_task_failure_event(env=env, error=f"{service}.{code}", cause=_aws_cause(ex, service, ", "))
        return super()._from_error(env=env, ex=ex)


def _service_for(service_name: str):
    if service_name == "sagemaker":
        return SageMakerTask()
    if service_name == "aws-sdk":
        return AwsSdkTask()
    return _original_factory(service_name)


class _Routing:
    """Installs the factory, the time scaling and Step Functions' JSONPath results for the duration of a run
    (reference-counted: runs may overlap)."""

    def __enter__(self) -> None:
        global _installed
        with _registry_lock:
            if _installed == 0:
                state_task_factory.state_task_service_for = _service_for
                retrier_decl.time = _RetryClock()
                retrier_decl.RetrierDecl._eval_body = _scaled_retry
                WaitFunction._wait_interval = _scaled_wait
                jsonpath.install()  # Step Functions' JSONPath result shapes (local/jsonpath.py)
            _installed += 1

    def __exit__(self, *exc: object) -> None:
        global _installed
        with _registry_lock:
            _installed -= 1
            if _installed == 0:
                state_task_factory.state_task_service_for = _original_factory
                retrier_decl.time = time
                retrier_decl.RetrierDecl._eval_body = _original_retry
                WaitFunction._wait_interval = _original_wait
                jsonpath.install(jsonpath.moto_extract_json)


# --- running -----------------------------------------------------------------------------------------------------
@dataclass
class ExecutionResult:
    status: str  # SUCCEEDED | FAILED | TIMED_OUT | ABORTED
    output: Any = None
    error: str | None = None
    cause: str | None = None
    events: list[dict] = field(default_factory=list)
    execution_arn: str = ""
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    @property
    def failed_state(self) -> str | None:
        """The state the execution failed in (the last state entered), for 'failed in X: cause' messages."""
        if self.succeeded:
            return None
        visits = self.states()
        return visits[-1].name if visits else None

    def states(self) -> list[StateVisit]:
        """The states entered, in order (cli.model.history_states: the one reading of a history into states)."""
        return history_states(self.events)

    def save(self, path: str | Path) -> Path:
        """The execution history as JSON (what GetExecutionHistory returns, plus the outcome)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"executionArn": self.execution_arn, "status": self.status, "output": self.output,
                                    "error": self.error, "cause": self.cause, "seconds": round(self.seconds, 3),
                                    "events": self.events}, indent=2, default=str))
        return path


def _json_event(event: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in event.items()}


class _Mock:
    """One mock_aws with real execution for all overlapping runs of this process."""

    lock = threading.Lock()
    users = 0
    mock = None

    @classmethod
    def acquire(cls) -> None:
        with cls.lock:
            if cls.users == 0:
                cls.mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
                cls.mock.start()
            cls.users += 1

    @classmethod
    def release(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users == 0 and cls.mock is not None:
                cls.mock.stop()
                cls.mock = None


def run_definition(definition: dict | str, input: dict | None = None, sagemaker: LocalSageMaker | None = None, *,
                   on_event: Callable[[dict], None] | None = None, name: str | None = None,
                   timeout: float | None = None, region: str = DEFAULT_REGION, account: str = DEFAULT_ACCOUNT,
                   role_arn: str | None = None, poll_interval: float = 0.2,
                   stop: threading.Event | None = None,
                   authorize: Callable[[str, dict], None] | None = None,
                   time_scale: float = 1.0) -> ExecutionResult:
    """Execute `definition` with `input`; SageMaker tasks call `sagemaker`. Blocks until the execution ends.

    `on_event(event)` gets every history event as GetExecutionHistory renders it (ISO timestamps), in order, while
    the execution runs. `timeout` (seconds) or setting `stop` stops the execution (ABORTED) and its .sync jobs.
    Ctrl-C does the same, then re-raises KeyboardInterrupt. `authorize(Task resource ARN, request)` (local.iam) is
    called before every SageMaker Task call and fails the state with what it raises (AccessDenied);
    `authorize(Task resource ARN, {name}, stopping=True)` before a stopped .sync state stops its job (a denial
    leaves the job running, as on AWS).
    `time_scale` multiplies the wall-clock time of every Wait state and Retry interval (0.01 for a run against
    scripted answers, where nothing needs time to pass); the history is the same, only sooner.
    """
    if not 0 < time_scale <= 1:
        raise ValueError(f"time_scale must be in (0, 1], not {time_scale}")
    text = definition if isinstance(definition, str) else json.dumps(definition)
    started = time.monotonic()
    machine_name = f"local-{uuid.uuid4().hex[:12]}"
    execution_name = name or f"run-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    role = role_arn or f"arn:aws:iam::{account}:role/local-state-machine"
    events: list[dict] = []
    with _Routing():
        _Mock.acquire()
        machine_arn = None
        try:
            client = boto3.client("stepfunctions", region_name=region, aws_access_key_id="local",
                                  aws_secret_access_key="local")
            try:
                machine_arn = client.create_state_machine(name=machine_name, definition=text,
                                                          roleArn=role)["stateMachineArn"]
            except ClientError as exc:
                raise ValueError(f"invalid state machine definition: {exc.response['Error']['Message']}") from None
            if sagemaker is not None:
                with _registry_lock:
                    _standins[machine_arn] = sagemaker
            if authorize is not None:
                with _registry_lock:
                    _authorizers[machine_arn] = authorize
            if time_scale != 1.0:
                with _registry_lock:
                    _time_scales[machine_arn] = time_scale
            execution_arn = client.start_execution(stateMachineArn=machine_arn, name=execution_name,
                                                   input=json.dumps(input or {}))["executionArn"]
            deadline = None if timeout is None else started + timeout
            try:
                while True:
                    described = client.describe_execution(executionArn=execution_arn)
                    for event in _new_events(client, execution_arn, len(events)):
                        events.append(event)
                        if on_event:
                            on_event(event)
                    if described["status"] != "RUNNING":
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        client.stop_execution(executionArn=execution_arn, error="States.Timeout",
                                              cause=f"local run exceeded {timeout:g}s")
                        deadline = None
                    if stop is not None and stop.is_set():
                        client.stop_execution(executionArn=execution_arn, error="Stopped",
                                              cause="stopped on this machine")
                        stop = None
                    time.sleep(poll_interval)
            except KeyboardInterrupt:
                client.stop_execution(executionArn=execution_arn, error="KeyboardInterrupt",
                                      cause="interrupted on this machine")
                time.sleep(1.0)  # lets the .sync state see the stop and stop its job
                raise
            time.sleep(poll_interval)  # the interpreter records its last events just after the status flips
            for event in _new_events(client, execution_arn, len(events)):
                events.append(event)
                if on_event:
                    on_event(event)
            output = described.get("output")
            return ExecutionResult(status=described["status"], output=json.loads(output) if output else None,
                                   error=described.get("error"), cause=described.get("cause"), events=events,
                                   execution_arn=execution_arn, seconds=time.monotonic() - started)
        finally:
            if machine_arn:
                with _registry_lock:
                    _standins.pop(machine_arn, None)
                    _authorizers.pop(machine_arn, None)
                    _time_scales.pop(machine_arn, None)
            _Mock.release()


def check_definition(definition: dict | str, *, region: str = DEFAULT_REGION) -> None:
    """Parse `definition` as the engine would run it (SageMaker tasks included); ValueError if it would not run."""
    text = definition if isinstance(definition, str) else json.dumps(definition)
    with _Routing():
        _Mock.acquire()
        try:
            client = boto3.client("stepfunctions", region_name=region, aws_access_key_id="local",
                                  aws_secret_access_key="local")
            try:
                arn = client.create_state_machine(name=f"check-{uuid.uuid4().hex[:12]}", definition=text,
                                                  roleArn=f"arn:aws:iam::{DEFAULT_ACCOUNT}:role/check")
            except ClientError as exc:
                raise ValueError(f"invalid state machine definition: {exc.response['Error']['Message']}") from None
            client.delete_state_machine(stateMachineArn=arn["stateMachineArn"])
        finally:
            _Mock.release()


def _new_events(client, execution_arn: str, seen: int) -> list[dict]:
    events: list[dict] = []
    kwargs: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
    while True:
        page = client.get_execution_history(**kwargs)
        events.extend(page["events"])
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    events.sort(key=lambda e: e["id"])
    return [_json_event(e) for e in events[seen:]]
