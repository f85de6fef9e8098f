"""The state machine: tune -> train with Debugger -> wait for rule verdicts -> gate -> create or update the endpoint.

JSONPath only, and only Task/Choice/Wait/Pass/Fail states with intrinsic functions: the same definition runs on
AWS and in local mode (moto's ASL interpreter). Every SageMaker call is a standard Step Functions integration
(`sagemaker:*` optimized tasks, `aws-sdk:sagemaker:describe*`); requests come from infra.sagemaker_requests.
Deployment values are `${...}` DefinitionSubstitutions, so DefinitionString is one plain string.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

import stackfacts as facts
from infra import sagemaker_requests as req
from infra.common import state_machine_log_group
from infra.config import RUN_ID_LENGTH, StackConfig, input_limits
from infra.security import integration_key
from ml import contract

IN_PROGRESS = ("InProgress", "Stopping")  # RuleEvaluationStatus values that are not a verdict yet
# Step Functions' error names for a refused SageMaker call: optimized integrations raise every service error as
# SageMaker.AmazonSageMakerException; aws-sdk integrations name it after the SDK exception class, which for an
# error code SageMaker's model does not declare (ValidationException, ThrottlingException) is
# SageMaker.SageMakerException (https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html
# "Handling errors"; local.engine raises the same names).
OPTIMIZED_ERROR = "SageMaker.AmazonSageMakerException"
SDK_ERROR = "SageMaker.SageMakerException"
# DescribeEndpoint on a missing endpoint: ValidationException 'Could not find endpoint "arn:..."' (botocore
# declares no ResourceNotFound for DescribeEndpoint; moto and the stand-in answer the same).
NOT_FOUND_CAUSE = "*Could not find endpoint*"
# A refused create call is retried first: the optimized integrations give throttling (ThrottlingException) and
# every other refusal the one name OPTIMIZED_ERROR, so only the Cause tells them apart
# (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html, "Retrying after an error").
RETRY_ATTEMPTS, RETRY_BACKOFF = 3, 2.0  # the first interval is StackConfig.retry_interval_s
# The Debugger fallback runs only when SageMaker's refusal names Debugger. AWS does not document the exact text of
# the refusal an account without Debugger gets (https://docs.aws.amazon.com/sagemaker/latest/dg/
# debugger-availability-change.html says only that new customers have no access); what is documented is that
# Debugger is configured through these CreateTrainingJob members
# (https://docs.aws.amazon.com/sagemaker/latest/dg/debugger-createtrainingjob-api.html)
# and that a refusal's Cause carries SageMaker's message (concepts-error-handling.html). Any other refusal
# (quota, a bad value, throttling that outlived the retries) is a training failure, never a silent fallback.
# StringMatches is case-sensitive: the capitalised member names cannot match the lower-case "debugger"
# hyperparameter or S3 prefixes a message might quote.
DEBUGGER_REFUSAL_CAUSES = ("*Debugger*", "*Profiler*", "*DebugHookConfig*", "*DebugRuleConfigurations*",
                           "*ProfilerConfig*", "*ProfilerRuleConfigurations*")
# EndpointStatus values (botocore EndpointStatus enum) that no waiting changes: the deploy loop ends on them.
# HyperParameterTuningJobStatus values (botocore enum: Completed | InProgress | Failed | Stopped | Stopping |
# Deleting | DeleteFailed): a job still running, and the ended ones whose best trial may be trained.
TUNING_RUNNING = ("InProgress", "Stopping")
TUNING_ENDED = ("Completed", "Stopped", "Failed")
ENDPOINT_BROKEN = ("Failed", "OutOfService", "UpdateRollbackFailed")
ENDPOINT_BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
# The execution input: every key and how "Check input" validates it (infra.config.validate_input does the same in
# Python before a local run).
INPUT_KEYS = facts.INPUT_KEYS
LOOKUP_RETRIES = 5  # DescribeEndpoint errors (other than not-found) retried before the execution gives up
_SCALING_SDK: dict[str, Any] = {"sdk": True, "service": "applicationautoscaling"}
# aws-sdk error names: "<service>.<exception>" (supported-services-awssdk.html, "Handling errors"): the modelled
# transient errors of DeregisterScalableTarget (botocore application-autoscaling), and throttling, which is not
# modelled (the SDK's base exception).
_SCALING_TRANSIENT = ("ApplicationAutoScaling.ConcurrentUpdateException",
                      "ApplicationAutoScaling.InternalServiceException",
                      "ApplicationAutoScaling.ApplicationAutoScalingException")
# A variant that is no scalable target: DeregisterScalableTarget answers ObjectNotFoundException ("the scalable
# target with the specified service namespace, resource ID, and scalable dimension does not exist",
# https://docs.aws.amazon.com/autoscaling/application/APIReference/API_DeregisterScalableTarget.html), whose
# message reads "No scalable target registered for ..."; moto (local mode) answers a ValidationException "No
# scalable target found for ...". Either means there is nothing to deregister.
SCALING_NOT_FOUND = ("ApplicationAutoScaling.ObjectNotFoundException", "*No scalable target*")
SERVERLESS_UPDATE_DOC = "https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints-update.html"


# --- state names (local mode and tests refer to them) ----------------------------------------------------
class S:
    PREPARE = "Prepare run"
    INPUT_IS_OBJECT = "Input is an object?"
    APPLY_INPUT = "Apply input overrides"
    PARENT_GIVEN = "Warm-start parent given?"
    CHECK_PARENT = "Check warm-start parent"
    NAME = "Name resources"
    CHECK_INPUT = "Check input"
    COUNT_ROUNDS = "Count tuning rounds"
    ROUNDS_FIT = "Tuning fits the timeout?"
    TUNING_TOO_LONG = "Invalid input: max_jobs for the execution timeout"
    INVALID_INPUT = "Invalid input"
    CHECK_WEIGHTS = "Check pretrained weights"
    WEIGHTS_MISSING = "Pretrained weights missing"
    CHECK_ENDPOINT = "Check existing endpoint"
    EXISTING_USABLE = "Existing endpoint usable?"
    SERVING_MODE_CHANGE = "Serving mode change refused"
    TUNE = "Tune hyperparameters"
    TUNE_WARM = "Tune hyperparameters (warm start)"
    TUNING_FAILED = "Tuning failed"
    READ_TUNING = "Read tuning results"
    READ_ENDED_TUNING = "Read ended tuning job"
    ENDED_WITH_BEST = "Ended tuning job has a best trial?"
    STOP_TUNING = "Stop tuning job"
    STOP_TRAINING = "Stop training job"
    BEST_FOUND = "Best trial found?"
    NO_BEST = "Tuning found no best trial"
    SELECT_BEST = "Select best trial"
    PREPARE_TRAINING = "Prepare training"
    TRAIN = "Train with best hyperparameters"
    DEBUGGER_REFUSED = "Refused for Debugger?"
    DEBUGGER_UNAVAILABLE = "Debugger unavailable"
    TRAIN_NO_DEBUGGER = "Train without Debugger"
    TRAINING_FAILED = "Training failed"
    DESCRIBE_TRAINING = "Describe training job"
    RULES_REPORTED = "Rule statuses reported?"
    NO_RULE_STATUSES = "Debugger ran no rules"
    NO_PROFILER_STATUSES = "Profiler rules unreported"
    NO_PROFILER_SUFFIX = " (no profiler rules)"  # the rule-polling states that read the Debugger list only
    RULE_PROGRESS = "Check rule progress"
    RULES_DONE = "Rules finished?"
    WAIT_RULES = "Wait for rule evaluations"
    RULES_TIMED_OUT = "Rule evaluations timed out"
    VERDICTS = "Collect rule verdicts"
    RULE_NAMES = "List rule names"
    RULES_LISTED = "Every rule listed?"
    RULES_MISSING = "Gate: rules not listed"
    REPORTS = "Report locations"
    REPORTS_NO_DEBUGGER = "Report locations (no Debugger)"
    REPORTS_NO_PROFILER = "Report locations (no profiler rules)"
    READ_TRAINING = "Read training results"
    METRICS_LISTED = "Metrics reported?"
    METRIC_NAMES = "List metric names"
    METRICS_NAMED = "Gate metrics reported?"
    FINAL_METRICS = "Final metrics"
    METRIC_VALUES = "Gate metric values"
    METRIC_VALUES_PRESENT = "Gate metric values present?"
    GATE_RULES = "Gate: rule verdicts"
    GATE = "Gate"
    METRICS_MISSING = "Gate: metrics missing"
    RULE_INCOMPLETE = "Gate: rule not evaluated"
    HEALTH_FAILED = "Gate: health checks failed"
    ACCURACY_LOW = "Gate: test accuracy too low"
    CREATE_MODEL = "Create model"
    CREATE_CONFIG = "Create endpoint config"
    FIND_ENDPOINT = "Find endpoint"
    ENDPOINT_STATE = "Endpoint status?"
    COUNT_SETTLE = "Count settle waits"
    SETTLE_TIMED_OUT = "Endpoint never settled"
    WAIT_SETTLE = "Wait for endpoint to settle"
    ENDPOINT_UNUSABLE = "Endpoint unusable"
    CREATE_ENDPOINT = "Create endpoint"
    UPDATE_ENDPOINT = "Update endpoint"
    WAIT_DEPLOY = "Wait for deployment"
    DESCRIBE_ENDPOINT = "Describe endpoint"
    COUNT_DEPLOY = "Count deployment checks"
    DEPLOY_DONE = "Deployment finished?"
    DEPLOY_TIMED_OUT = "Deployment timed out"
    ROLLED_BACK = "Deployment rolled back"
    DEPLOY_FAILED = "Deployment failed"
    ENDPOINT_FAILED = "Endpoint failed"
    DEPLOYED = "Deployed"
    SIZE_NEW = "Size the new endpoint"
    SIZE_UPDATE = "Size fleet for update?"
    LIVE_COUNT = "Live instance count"
    LIVE_LARGER = "Live fleet larger?"
    SIZE_LIVE = "Keep the live instance count"
    SIZE_CONFIGURED = "Configured instance count"
    CREATE_OR_UPDATE = "Create or update?"
    DESCRIBE_LIVE_CONFIG = "Describe live endpoint config"
    LIVE_VARIANT_KNOWN = "Live instance type known?"
    LIVE_VARIANT = "Live variant"
    TYPE_CHANGES = "Instance type unchanged?"
    DEREGISTER_SCALING = "Deregister autoscaling target"
    NOT_REGISTERED = "Scalable target absent?"
    REGISTER_SCALING = "Register autoscaling target"
    RESTORE_SCALING = "Restore autoscaling after rollback"
    RESTORE_POLICY = "Restore scaling policy after rollback"
    SCALING_REMOVED = "Autoscaling target removed?"
    RESTORE_SCALING_FAILED = "Restore autoscaling after failure"
    RESTORE_POLICY_FAILED = "Restore scaling policy after failure"
    SCALING_REMOVED_TIMEOUT = "Autoscaling target removed before timeout?"
    RESTORE_SCALING_TIMEOUT = "Restore autoscaling after timeout"
    RESTORE_POLICY_TIMEOUT = "Restore scaling policy after timeout"
    SCALING_POLICY = "Apply scaling policy"
    SCALING_FAILED = "Autoscaling not applied"

    @staticmethod
    def rule_failed(rule: str) -> str:
        return f"Gate: {rule} found issues"

    @staticmethod
    def invalid(key: str) -> str:
        return f"Invalid input: {key}"

    @staticmethod
    def lookup_error(stage: str) -> str:
        return f"{stage}: lookup error?"

    @staticmethod
    def lookup_wait(stage: str) -> str:
        return f"{stage}: wait after throttling"

    @staticmethod
    def lookup_count(stage: str) -> str:
        return f"{stage}: count lookups"

    @staticmethod
    def lookup_failed(stage: str) -> str:
        return f"{stage}: lookup failed"


def _any_of(path: str, values: tuple[str, ...]) -> sfn.Condition:
    return sfn.Condition.or_(*[sfn.Condition.string_equals(path, v) for v in values])


def _metric_path(name: str) -> str:
    # The MetricData entries, not their .Value: a filter whose result is empty raises States.Runtime in the
    # interpreter (moto/LocalStack's json_path: only [*] and slices yield []), and Value is optional.
    return f"$.training.FinalMetricDataList[?(@.MetricName == '{name}')]"


class Pipeline(Construct):
    """The state machine with its log group; IAM for what it calls is added by infra.security from
    `integrations` (every Task's Resource, as infra.security.integration_key names it)."""

    def __init__(self, scope: Construct, cid: str, *, cfg: StackConfig, role: iam.IRole,
                 substitutions: dict[str, str]) -> None:
        super().__init__(scope, cid)
        self.cfg = cfg
        self.integrations: set[str] = set()
        self._deregister: sfn.IChainable | None = None
        needed = set(req.SUBSTITUTIONS) - (set() if cfg.debugger.enabled else {req.RULES_IMAGE})
        if needed != set(substitutions):
            raise ValueError(f"definition substitutions {sorted(substitutions)} != needed {sorted(needed)}")
        self.log_group = state_machine_log_group(self, "Logs", cfg)
        self.state_machine = sfn.StateMachine(
            self, "StateMachine",
            state_machine_name=cfg.state_machine_name,
            comment="Tune -> train with Debugger -> gate on rule verdicts and health checks -> deploy blue/green",
            definition_body=sfn.DefinitionBody.from_chainable(self._definition()),
            definition_substitutions=substitutions,
            role=role,
            timeout=Duration.hours(cfg.execution_timeout_hours),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True),
        )

    # --- building blocks ---------------------------------------------------------------------------
    def _task(self, name: str, resource: str, parameters: dict[str, Any], *, result_path: str,
              result_selector: dict | None = None) -> sfn.CustomState:
        """A Task whose answer is stored under its own key (a missing ResultPath would replace the whole state
        with the answer), trimmed by a ResultSelector where the members it picks are required by the API shape."""
        state = {"Type": "Task", "Resource": resource, "Parameters": parameters, "ResultPath": result_path}
        if result_selector is not None:
            state["ResultSelector"] = result_selector
        self.integrations.add(integration_key(resource))
        return sfn.CustomState(self, name, state_json=state)

    def _wait_for_job(self, name: str, action: str, parameters: dict[str, Any]) -> sfn.CustomState:
        """A `.sync` job: Step Functions builds its output itself, so nothing is read from it (the results come
        from an explicit aws-sdk Describe* whose shape botocore defines); a literal marks that it ended."""
        return self._task(name, req.task_resource(action, sync=True), parameters,
                          result_selector={"ended": True}, result_path=f"$.waited.{action}")

    def _retry_refusals(self, task: sfn.CustomState) -> None:
        """A refused create call (throttling, mostly) is tried again with backoff before its Catch sees it."""
        task.add_retry(errors=[OPTIMIZED_ERROR], interval=Duration.seconds(self.cfg.retry_interval_s),
                       max_attempts=RETRY_ATTEMPTS, backoff_rate=RETRY_BACKOFF)

    @staticmethod
    def _retry_reads(task: sfn.CustomState) -> None:
        """A describe call that fails (throttling, a transient 5xx) is read again before its Catch sees it."""
        task.add_retry(errors=["States.TaskFailed"], interval=Duration.seconds(5), max_attempts=3, backoff_rate=2.0)

    def _stop_job(self, name: str, action: str, parameters: dict[str, Any], result_path: str,
                  failed: sfn.IChainable) -> sfn.CustomState:
        """A stop of the run's job on the way to `failed`: retried once more, and whatever it answers (an ended job
        refuses the stop) kept in $.stop_error, so that `failed` reports the task's own $.error."""
        stop = self._task(name, req.task_resource(action, sdk=True), parameters, result_selector={"stopped": True},
                          result_path=result_path)
        stop.add_retry(errors=["States.TaskFailed"], interval=Duration.seconds(self.cfg.retry_interval_s),
                       max_attempts=2, backoff_rate=2.0)
        stop.add_catch(failed, errors=["States.ALL"], result_path="$.stop_error")
        stop.next(failed)
        return stop

    def _fail(self, name: str, error: str, *, cause: str | None = None, cause_path: str | None = None) -> sfn.Fail:
        return sfn.Fail(self, name, error=error, cause=cause, cause_path=cause_path)

    def _counter(self, name: str, key: str) -> sfn.Pass:
        """+1 on $.poll.<key>.count: every loop passes one, and its Choice ends the loop at a bound."""
        return sfn.Pass(self, name, parameters={"count.$": f"States.MathAdd($.poll.{key}.count, 1)"},
                        result_path=f"$.poll.{key}")

    def _lookup(self, name: str, key: str, *, missing: sfn.IChainable) -> sfn.CustomState:
        """DescribeEndpoint into $.existing. Not found goes to `missing`; any other error waits and asks again (at
        most LOOKUP_RETRIES times), then fails the execution with its cause: nothing is created but on not-found.

        Every error is retried, not only throttling, because a throttle cannot be told apart reliably: AWS
        documents only the Error name of an aws-sdk task ("SageMaker.SageMakerException" for an undeclared code,
        supported-services-awssdk.html), not that the Cause carries the error code; the SDK for Java 2.x's message
        is "<message> (Service: SageMaker, Status Code: 400, Request ID: ...)", and SageMaker's throttling message
        is "Rate exceeded" (unverified which text Step Functions puts in the Cause). Retrying an access denial
        costs LOOKUP_RETRIES waits before the same failure; a transient 5xx gets its retry too."""
        cfg = self.cfg
        task = self._task(name, req.task_resource("describeEndpoint", sdk=True), req.describe_endpoint(cfg),
                          result_path="$.existing")
        failed = self._fail(S.lookup_failed(name), "EndpointLookupFailed", cause_path=(
            f"States.Format('DescribeEndpoint {cfg.endpoint_name} failed; nothing was deployed: {{}}', "
            f"States.JsonToString($.lookup_error))"))
        count = self._counter(S.lookup_count(name), key)
        wait = sfn.Wait(self, S.lookup_wait(name), time=sfn.WaitTime.duration(Duration.seconds(cfg.serving.poll_s)))
        cause = "$.lookup_error.Cause"
        classify = (sfn.Choice(self, S.lookup_error(name))
                    .when(sfn.Condition.is_not_present(cause), failed)
                    .when(sfn.Condition.string_matches(cause, NOT_FOUND_CAUSE), missing)
                    .when(sfn.Condition.number_less_than(f"$.poll.{key}.count", LOOKUP_RETRIES), count)
                    .otherwise(failed))
        count.next(wait).next(task)
        task.add_catch(classify, errors=["States.ALL"], result_path="$.lookup_error")
        return task

    def _instance_endpoint(self) -> sfn.Condition:
        """The existing endpoint ($.existing) serves from instances: a variant without CurrentServerlessConfig."""
        return sfn.Condition.and_(
            sfn.Condition.is_present("$.existing.ProductionVariants[0]"),
            sfn.Condition.is_not_present("$.existing.ProductionVariants[0].CurrentServerlessConfig"))

    # --- the definition ----------------------------------------------------------------------------
    def _definition(self) -> sfn.IChainable:
        cfg = self.cfg
        dbg = cfg.debugger
        defaults: dict[str, Any] = {
            "dataset": req.s3(cfg.data_prefix),
            "max_jobs": cfg.tuning.max_jobs,
            "max_parallel_jobs": cfg.tuning.max_parallel_jobs,
            "min_test_accuracy": cfg.gate.min_test_accuracy,
            "warm_start_parent": cfg.tuning.warm_start_parent or "",  # "" (or null in the input): cold start
        }
        assert tuple(defaults) == INPUT_KEYS
        prepare = sfn.Pass(self, S.PREPARE, parameters={
            "defaults": defaults, "input.$": "$",
            # 12 hex characters of a fresh UUID: unique per execution and short enough for the 32-character
            # tuning job name. Computed once (a redrive reuses the names), outside the input's reach.
            "run_id.$": "States.ArrayGetItem(States.StringSplit(States.UUID(), '-'), 4)",
            # JsonMerge below needs an object: an array, string or number input is refused by name first.
            "input_text.$": "States.JsonToString($)",
        }, comment="Defaults from cdk.json context; any of them may be given in the input.")
        is_object = (sfn.Choice(self, S.INPUT_IS_OBJECT)
                     .when(sfn.Condition.not_(sfn.Condition.string_matches("$.input_text", "{*")), self._fail(
                         S.invalid("input"), "InvalidInput", cause=(
                             f"The execution input must be a JSON object holding any of {', '.join(INPUT_KEYS)} "
                             "({} for the defaults); nothing was started."))))
        apply_input = sfn.Pass(self, S.APPLY_INPUT, parameters={
            "args.$": "States.JsonMerge($.defaults, $.input, false)", "run_id.$": "$.run_id"})
        base = f"States.Format('{cfg.prefix}-{{}}', $.run_id)"
        name = sfn.Pass(self, S.NAME, parameters={
            "args.$": "$.args",
            "names": {"run_id.$": "$.run_id", "tuning_job.$": base, "training_job.$": base,
                      "training_job_no_debugger.$": f"States.Format('{cfg.prefix}-{{}}-nd', $.run_id)",
                      "model.$": base, "endpoint_config.$": base, "endpoint": cfg.endpoint_name},
            # The final training job that ran and whether it had Debugger ("unavailable": SageMaker refused it).
            "run": {"training_job.$": base, "debugger": {"status": "on" if dbg.enabled else "off", "reason": ""},
                    # Profiler rules: "unavailable" when SageMaker ran the job without listing their statuses.
                    "profiler": "on" if dbg.active_profiler_rules else "off"},
            "poll": {k: {"count": 0} for k in ("rules", "settle", "deploy", "existing", "find")},
            "verdicts": {},
            # For "Check input": every value of the merged input (more than INPUT_KEYS: an unknown key) and the
            # integers as text (a fraction or an exponent is not an integer).
            "check": {"values.$": "$.args.*", "max_jobs.$": "States.JsonToString($.args.max_jobs)",
                      "max_parallel_jobs.$": "States.JsonToString($.args.max_parallel_jobs)"},
        }, comment=f"Every SageMaker name is <prefix>-<run id> ({RUN_ID_LENGTH} hex); the endpoint name is stable.")

        # A Catch's error output always has Error; Cause is not guaranteed (States.Timeout, States.Permissions...),
        # and a CausePath that finds nothing raises States.Runtime instead of the intended error: quote it whole.
        tuning_failed = self._fail(S.TUNING_FAILED, "TuningFailed", cause_path=(
            "States.Format('Tuning job {} failed; nothing was trained or deployed: {}', $.names.tuning_job, "
            "States.JsonToString($.error))"))
        training_failed = self._fail(S.TRAINING_FAILED, "TrainingFailed", cause_path=(
            "States.Format('Training job {} failed; the endpoint was not changed: {}', $.run.training_job, "
            "States.JsonToString($.error))"))
        self._deploy_failed = self._fail(S.DEPLOY_FAILED, "DeploymentFailed", cause_path=(
            "States.Format('Deploying {} to endpoint {} failed: {}', $.names.endpoint_config, $.names.endpoint, "
            "States.JsonToString($.error))"))
        # DescribeEndpoint's EndpointStatus values that no update starts from (ENDPOINT_BROKEN): checked before
        # tuning, and again right before the deploy (the endpoint may break while the jobs run).
        self._endpoint_unusable = self._fail(S.ENDPOINT_UNUSABLE, "EndpointUnusable", cause_path=(
            f"States.Format('Endpoint {{}} is {{}} and cannot be updated: delete it (aws sagemaker delete-endpoint "
            f"--endpoint-name {cfg.endpoint_name}) and start a new execution.', $.names.endpoint, "
            f"$.existing.EndpointStatus)"))
        self._mode_change = self._fail(S.SERVING_MODE_CHANGE, "ServingModeChangeRefused", cause=(
            f"Endpoint {cfg.endpoint_name} serves from instances and this stack deploys it serverless: SageMaker "
            f"cannot update an instance endpoint to serverless ({SERVERLESS_UPDATE_DOC}). Delete the endpoint "
            f"(aws sagemaker delete-endpoint --endpoint-name {cfg.endpoint_name}) or deploy with "
            "serving.serverless=false; nothing was trained or changed."))

        tune = self._wait_for_job(S.TUNE, "createHyperParameterTuningJob", req.tuning_job(cfg, warm_start=False))
        train = self._wait_for_job(S.TRAIN, "createTrainingJob", req.training_job(cfg))
        tune_warm = self._wait_for_job(S.TUNE_WARM, "createHyperParameterTuningJob",
                                       req.tuning_job(cfg, warm_start=True))
        read_tuning = self._task(S.READ_TUNING, req.task_resource("describeHyperParameterTuningJob", sdk=True),
                                 req.describe_tuning_job(), result_path="$.tuning")
        for t in (tune, tune_warm, train):  # the create calls: throttling is retried before any Catch
            self._retry_refusals(t)
        best = "$.tuning.BestTrainingJob"
        # The .sync task fails when the tuning job ends Stopped or Failed (e.g. at ResourceLimits.MaxRuntimeInSeconds,
        # "the maximum time in seconds that a hyperparameter tuning job can run":
        # sagemaker/latest/APIReference/API_ResourceLimits.html), yet its best trial may have finished hours of GPU
        # time: read the job, and continue with the best trial when there is one. The task can also fail while the
        # job still runs (a create retried after a lost answer gets ResourceInUse): an InProgress or Stopping job
        # is stopped first, so that no trial keeps running, and the run fails with the task's own error. Otherwise
        # (or when the job was never created) the run fails with that error, kept in $.error.
        # StopHyperParameterTuningJob stops the job "and all running training jobs that the tuning job launched"
        # (sagemaker/latest/APIReference/API_StopHyperParameterTuningJob.html). A job already Stopping answers a
        # ValidationException (SDK_ERROR, an error code botocore does not model); whatever the stop's answer
        # (kept in $.stop_error and the history), the run fails with the tuning task's own error. A describe that
        # keeps failing stops the job too: it may be running (review 5 F3), and a stop of an ended job is refused.
        stop = self._stop_job(S.STOP_TUNING, "stopHyperParameterTuningJob", req.stop_tuning_job(), "$.tuning_stop",
                              tuning_failed)
        read_ended = self._task(S.READ_ENDED_TUNING, req.task_resource("describeHyperParameterTuningJob", sdk=True),
                                req.describe_tuning_job(), result_path="$.tuning")
        read_ended.add_catch(stop, errors=["States.ALL"], result_path="$.read_error")
        for t in (tune, tune_warm):
            t.add_catch(read_ended, errors=["States.ALL"], result_path="$.error")
        read_tuning.add_catch(tuning_failed, errors=["States.ALL"], result_path="$.error")
        for t in (read_tuning, read_ended):
            self._retry_reads(t)
        has_best = sfn.Condition.and_(sfn.Condition.is_present(f"{best}.TrainingJobName"),
                                      sfn.Condition.is_present(f"{best}.FinalHyperParameterTuningJobObjectiveMetric"))
        select_best = sfn.Pass(self, S.SELECT_BEST, result_path="$.tuning", parameters={
            "job_name.$": "$.tuning.HyperParameterTuningJobName",
            # Completed, or Stopped/Failed with a best trial ("Read ended tuning job"): the run's output says which.
            "status.$": "$.tuning.HyperParameterTuningJobStatus",
            "best_training_job.$": f"{best}.TrainingJobName",
            "hyperparameters.$": f"{best}.TunedHyperParameters",
            "objective.$": f"{best}.FinalHyperParameterTuningJobObjectiveMetric"})
        # BestTrainingJob and its objective are optional members of the response: absent, the run ends cleanly.
        best_found = (sfn.Choice(self, S.BEST_FOUND)
                      .when(sfn.Condition.or_(
                          sfn.Condition.is_not_present(f"{best}.TrainingJobName"),
                          sfn.Condition.is_not_present(f"{best}.FinalHyperParameterTuningJobObjectiveMetric")),
                          self._fail(S.NO_BEST, "TuningFailed", cause_path=(
                              "States.Format('Tuning job {} ended without a best trial that reported the objective "
                              "metric; nothing was trained or deployed.', $.names.tuning_job)")))
                      .otherwise(select_best))
        status = "$.tuning.HyperParameterTuningJobStatus"  # a required member (botocore)
        read_ended.next(sfn.Choice(self, S.ENDED_WITH_BEST)
                        .when(_any_of(status, TUNING_RUNNING), stop)
                        .when(sfn.Condition.and_(_any_of(status, TUNING_ENDED), has_best), select_best)
                        .otherwise(tuning_failed))

        static: dict[str, Any] = {"static": req.static_hyperparameters(cfg, debugger=dbg.enabled)}
        if dbg.enabled:
            static["static_no_debugger"] = req.static_hyperparameters(cfg, debugger=False)
        prepare_training = sfn.Pass(
            self, S.PREPARE_TRAINING, result_path="$.hyperparameters", parameters=static,
            comment="Static hyperparameters; the train task merges the best trial's tuned values over them.")
        read_training = self._read_training(training_failed)
        # A training task can fail while its job still runs: a create re-sent after a lost answer gets ResourceInUse
        # for the job the first call started (CreateTrainingJob's errors: ResourceInUse, ResourceLimitExceeded,
        # ResourceNotFound; sagemaker/latest/APIReference/API_CreateTrainingJob.html), which would bill on for up to
        # MaxRuntimeInSeconds (review 4 R9). Every failure of a training task therefore stops the run's job
        # (sagemaker/latest/APIReference/API_StopTrainingJob.html) before "Training failed". A job that already
        # ended, or never started, answers a ValidationException or ResourceNotFound: kept in $.stop_error, and the
        # run fails with the training task's own error either way.
        stop_training = self._stop_job(S.STOP_TRAINING, "stopTrainingJob", req.stop_training_job(), "$.training_stop",
                                       training_failed)

        if dbg.enabled:
            # Debugger is closed to new customers (2026-07-30): an account without it has the Debugger job refused
            # at CreateTrainingJob (an optimized-integration error, SageMaker.AmazonSageMakerException; a job that
            # started and failed is States.TaskFailed instead). The same job without any Debugger member then
            # runs under its own name; the two requests differ only in those members, so when the second is
            # accepted, the refusal was Debugger's. The gate then relies on the script's own health checks, and
            # the output records debugger.status "unavailable" with SageMaker's reason.
            fallback = sfn.Pass(self, S.DEBUGGER_UNAVAILABLE, result_path="$.run", parameters={
                "training_job.$": "$.names.training_job_no_debugger",
                "debugger": {"status": "unavailable", "reason.$": "$.error.Cause"},
                "profiler": "unavailable" if dbg.active_profiler_rules else "off"})
            cause = "$.error.Cause"
            refused = (sfn.Choice(self, S.DEBUGGER_REFUSED, comment="Only a refusal that names Debugger falls back.")
                       .when(sfn.Condition.and_(sfn.Condition.is_present(cause), sfn.Condition.or_(*[
                           sfn.Condition.string_matches(cause, p) for p in DEBUGGER_REFUSAL_CAUSES])), fallback)
                       .otherwise(stop_training))
            train_plain = self._wait_for_job(S.TRAIN_NO_DEBUGGER, "createTrainingJob",
                                             req.training_job(cfg, debugger=False))
            self._retry_refusals(train_plain)
            train_plain.add_catch(stop_training, errors=["States.ALL"], result_path="$.error")
            train.add_catch(refused, errors=[OPTIMIZED_ERROR], result_path="$.error")
            reports_no_debugger = self._reports(debugger=False)
            reports_no_debugger.next(read_training)
            fallback.next(train_plain).next(reports_no_debugger)
        train.add_catch(stop_training, errors=["States.ALL"], result_path="$.error")
        reports = self._reports(debugger=dbg.enabled)
        reports.next(read_training)
        if dbg.enabled and (dbg.active_rules or dbg.active_profiler_rules):
            reports_no_profiler = None
            if dbg.active_rules and dbg.active_profiler_rules:
                reports_no_profiler = self._reports(debugger=True, profiler=False)
                reports_no_profiler.next(read_training)
            train.next(self._rule_wait(reports, reports_no_debugger, reports_no_profiler, training_failed))
        else:
            train.next(reports)

        warm = (sfn.Choice(self, "Warm start?")
                .when(sfn.Condition.or_(sfn.Condition.is_null("$.args.warm_start_parent"),
                                        sfn.Condition.string_equals("$.args.warm_start_parent", "")), tune)
                .otherwise(tune_warm))
        check_endpoint = self._lookup(S.CHECK_ENDPOINT, "existing", missing=warm)
        # Refused before any job: an endpoint no update can start from (the deploy would end there after the GPU
        # hours), and an instance endpoint when this stack deploys serverless (SageMaker cannot switch it).
        usable = (sfn.Choice(self, S.EXISTING_USABLE, comment="Nothing is trained for an endpoint that cannot "
                                                               "take the result.")
                  .when(_any_of("$.existing.EndpointStatus", ENDPOINT_BROKEN), self._endpoint_unusable))
        if cfg.serving.serverless:
            usable.when(self._instance_endpoint(), self._mode_change)
        check_endpoint.next(usable.otherwise(warm))
        for t in (tune, tune_warm):
            t.next(read_tuning)
        read_tuning.next(best_found)
        select_best.next(prepare_training).next(train)
        prepare.next(is_object)
        is_object.otherwise(apply_input)
        apply_input.next(name).next(self._check_input(self._check_parent(self._check_weights(check_endpoint))))
        return prepare

    def _check_parent(self, then: sfn.IChainable) -> sfn.IChainable:
        """warm_start_parent must name a tuning job SageMaker can describe for this role:
        DescribeHyperParameterTuningJob validates the name against botocore's HyperParameterTuningJobName (pattern,
        at most 32 characters), the IAM grant holds it to the prefix, and a misspelt name is caught before anything
        runs (ASL has no string-length or character-class test; "Check input" has checked type and prefix)."""
        cfg = self.cfg
        var = "$.args.warm_start_parent"
        describe = self._task(S.CHECK_PARENT, req.task_resource("describeHyperParameterTuningJob", sdk=True),
                              {"HyperParameterTuningJobName.$": var},
                              result_selector={"status.$": "$.HyperParameterTuningJobStatus"},
                              result_path="$.check.parent")
        describe.add_retry(errors=[SDK_ERROR], interval=Duration.seconds(cfg.retry_interval_s),
                           max_attempts=RETRY_ATTEMPTS, backoff_rate=RETRY_BACKOFF)  # throttling
        describe.add_catch(self._fail(S.invalid("warm_start_parent") + " (not described)", "InvalidInput", cause_path=(
            f"States.Format('Input warm_start_parent {{}} must name an existing tuning job of this stack "
            f"({cfg.prefix}-..., at most 32 letters, digits and hyphens); SageMaker answered: {{}}', {var}, "
            "States.JsonToString($.parent_error))")), errors=["States.ALL"], result_path="$.parent_error")
        describe.next(then)
        return (sfn.Choice(self, S.PARENT_GIVEN)
                .when(sfn.Condition.or_(sfn.Condition.is_null(var), sfn.Condition.string_equals(var, "")), then)
                .otherwise(describe))

    def _check_weights(self, then: sfn.IChainable) -> sfn.IChainable:
        """Every trial reads the staged weights as its pretrained channel: fail in seconds when they are not there,
        not after the tuning job fails at its data download. An aws-sdk S3 HeadObject
        (https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html)."""
        cfg = self.cfg
        if cfg.pretrained_key is None:
            return then
        uri = f"s3://${{{req.BUCKET}}}/{cfg.pretrained_key}"
        head = self._task(S.CHECK_WEIGHTS, "arn:aws:states:::aws-sdk:s3:headObject", req.head_pretrained(cfg),
                          result_selector={"staged": True}, result_path="$.waited.pretrained")
        head.add_catch(self._fail(S.WEIGHTS_MISSING, "PretrainedWeightsMissing", cause_path=(
            f"States.Format('The pretrained weights {uri} every tuning trial reads are missing or unreadable "
            f"(S3 HeadObject: {{}}): stage them with `imgclf stage-weights`, then start again; nothing was trained.', "
            "$.weights_error.Error)")), errors=["States.ALL"], result_path="$.weights_error")
        head.next(then)
        return head

    def _check_input(self, valid: sfn.IChainable) -> sfn.Choice:
        """Every key of the input: known, of its type, in range, names within the prefix (the IAM scope)."""
        cfg = self.cfg
        limits = input_limits()
        bucket_data = req.s3(cfg.data_prefix)
        choice = sfn.Choice(self, S.CHECK_INPUT, comment="One Fail state per key, so the error names it.")

        def invalid(key: str, cause: str, state: str | None = None) -> sfn.Fail:
            return self._fail(state or S.invalid(key), "InvalidInput", cause=f"Input '{key}' {cause}")

        c = sfn.Condition
        choice.when(c.is_present(f"$.check.values[{len(INPUT_KEYS)}]"), self._fail(
            S.invalid("keys"), "InvalidInput", cause=f"The input may hold only {', '.join(INPUT_KEYS)}; it has "
                                                     "another key (misspelt?)."))
        bad_dataset = invalid("dataset", f"must be an s3:// prefix under {bucket_data} ending with '/', holding "
                                         f"{', '.join(f'{ch}/' for ch in contract.CHANNELS)} (one folder per class "
                                         "in each).")
        choice.when(c.not_(c.is_string("$.args.dataset")), bad_dataset)
        choice.when(c.not_(c.or_(c.string_equals("$.args.dataset", bucket_data),
                                 c.string_matches("$.args.dataset", f"{bucket_data}*/"))), bad_dataset)
        for key in ("max_jobs", "max_parallel_jobs"):
            low, high = limits[key]
            bad = invalid(key, f"must be an integer from {low} to {high}.")
            var = f"$.args.{key}"
            choice.when(c.not_(c.is_numeric(var)), bad)
            choice.when(c.or_(*[c.string_matches(f"$.check.{key}", p) for p in ("*.*", "*e*", "*E*")]), bad)
            choice.when(c.or_(c.number_less_than(var, low), c.number_greater_than(var, high)), bad)
        choice.when(c.number_greater_than_json_path("$.args.max_parallel_jobs", "$.args.max_jobs"),
                    invalid("max_parallel_jobs", "cannot exceed max_jobs.",
                            f"{S.invalid('max_parallel_jobs')} above max_jobs"))
        # ceil(max_jobs / max_parallel_jobs) rounds of trials must fit what the execution timeout leaves for tuning
        # (StackConfig.tuning_budget_s): States.ArrayRange(1, max_jobs, max_parallel_jobs) has exactly that many
        # elements, and is computed only once both are known integers in range.
        rounds = sfn.Pass(self, S.COUNT_ROUNDS, result_path="$.check.rounds", parameters={
            "count.$": "States.ArrayLength(States.ArrayRange(1, $.args.max_jobs, $.args.max_parallel_jobs))"})
        fits = (sfn.Choice(self, S.ROUNDS_FIT)
                .when(c.number_greater_than("$.check.rounds.count", cfg.tuning_rounds), invalid(
                    "max_jobs", f"needs more than {cfg.tuning_rounds} rounds of max_parallel_jobs trials "
                                f"({cfg.trial_s} s each): the execution timeout ({cfg.execution_timeout_hours} h) "
                                f"leaves {cfg.tuning_budget_s} s for tuning after training, rules and deployment. "
                                "Raise max_parallel_jobs or lower max_jobs.", S.TUNING_TOO_LONG))
                .otherwise(valid))
        rounds.next(fits)
        low, high = limits["min_test_accuracy"]
        bad = invalid("min_test_accuracy", f"must be a number from {low} to {high}.")
        choice.when(c.not_(c.is_numeric("$.args.min_test_accuracy")), bad)
        choice.when(c.or_(c.number_less_than("$.args.min_test_accuracy", low),
                          c.number_greater_than("$.args.min_test_accuracy", high)), bad)
        bad = invalid("warm_start_parent", f"must name a tuning job of this stack ('{cfg.prefix}-...'), or be "
                                           "empty or null for a cold start.")
        var = "$.args.warm_start_parent"
        choice.when(c.not_(c.or_(c.is_null(var), c.is_string(var))), bad)
        choice.when(c.and_(c.is_string(var), c.not_(c.string_equals(var, "")),
                           c.not_(c.string_matches(var, f"{cfg.prefix}-*"))), bad)
        return choice.otherwise(rounds)

    def _read_training(self, failed: sfn.IChainable) -> sfn.CustomState:
        """DescribeTrainingJob of the job that ran: model artifacts (required members) and the gate's metrics
        (FinalMetricDataList is optional, and a metric may be missing from it: both end at the gate cleanly)."""
        read = self._task(S.READ_TRAINING, req.task_resource("describeTrainingJob", sdk=True),
                          req.describe_training_job("$.run.training_job"), result_path="$.training")
        self._retry_reads(read)
        read.add_catch(failed, errors=["States.ALL"], result_path="$.error")
        missing = self._fail(S.METRICS_MISSING, "GateFailed",
                             cause=f"The training job reported no final {contract.TEST_ACCURACY} / "
                                   f"{contract.HEALTH_ISSUES} metric; the endpoint was not changed.")
        gated = (contract.TEST_ACCURACY, contract.HEALTH_ISSUES)
        final = sfn.Pass(self, S.FINAL_METRICS, result_path="$.training", parameters={
            "job_name.$": "$.training.TrainingJobName",
            "model_data.$": "$.training.ModelArtifacts.S3ModelArtifacts",
            "metric_data": {f"{m}.$": _metric_path(m) for m in gated}})
        names = sfn.Pass(self, S.METRIC_NAMES, result_path="$.metric_names",
                         parameters={"text.$": "States.JsonToString($.training.FinalMetricDataList)"})
        named = (sfn.Choice(self, S.METRICS_NAMED)
                 .when(sfn.Condition.or_(*[sfn.Condition.not_(sfn.Condition.string_matches(
                     "$.metric_names.text", f'*"{m}"*')) for m in gated]), missing)
                 .otherwise(final))
        listed = (sfn.Choice(self, S.METRICS_LISTED)
                  .when(sfn.Condition.is_not_present("$.training.FinalMetricDataList"), missing)
                  .otherwise(names))
        # MetricData.Value is optional (botocore: MetricData has no required members): [*].Value of entries without
        # one is [], and a Choice on an absent [0] raises States.Runtime, which no Catch takes
        # (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html).
        values = sfn.Pass(self, S.METRIC_VALUES, result_path="$.training.metrics", parameters={
            f"{m}.$": f"$.training.metric_data.{m}[*].Value" for m in gated})
        valued = (sfn.Choice(self, S.METRIC_VALUES_PRESENT)
                  .when(sfn.Condition.or_(*[sfn.Condition.is_not_present(f"$.training.metrics.{m}[0]")
                                            for m in gated]), missing)
                  .otherwise(self._gate()))
        names.next(named)
        final.next(values).next(valued)
        read.next(listed)
        return read

    def _rule_wait(self, after: sfn.IChainable, after_no_debugger: sfn.IChainable,
                   after_no_profiler: sfn.IChainable | None, failed: sfn.IChainable) -> sfn.IChainable:
        """.sync ends with the training job, not with its rule jobs: poll until every rule has a verdict.

        DebugRuleEvaluationStatuses / ProfilerRuleEvaluationStatuses and each entry's RuleEvaluationStatus are
        optional members of DescribeTrainingJobResponse (botocore), and a JSONPath through an absent member raises
        States.Runtime, which no Catch takes: the raw description is stored, a Choice checks that each list is
        present, and an entry without a status counts as not evaluated yet (listed != stated).

        "Debugger ran no rules" is decided on the Debugger list alone (the gating rules are Debugger rules): a job
        that lists its Debugger rules but no profiler rules still collects and gates on the Debugger verdicts,
        with the profiler recorded "unavailable" (review 3 N3). Only when no Debugger rule is configured does the
        profiler list decide."""
        dbg = self.cfg.debugger
        job = "$.rules.job"
        rules_of = {"debug": dbg.active_rules, "profiler": dbg.active_profiler_rules}
        # Debug/ProfilerRuleEvaluationStatuses of the kinds configured
        kinds = {kind: f"{job}.{kind.capitalize()}RuleEvaluationStatuses" for kind, rules in rules_of.items() if rules}
        describe = self._task(S.DESCRIBE_TRAINING, req.task_resource("describeTrainingJob", sdk=True),
                              req.describe_training_job(), result_path=job)
        self._retry_reads(describe)
        describe.add_catch(failed, errors=["States.ALL"], result_path="$.error")
        # A job SageMaker accepted with Debugger rules but that lists no rule statuses (absent or empty: AWS only says
        # new customers "have no access", sagemaker/latest/dg/debugger-createtrainingjob-api.html) ran without
        # Debugger: recorded like the refusal fallback (with its report locations), and the script's health checks
        # and accuracy gate decide, so a new account still deploys (issue 11 item 1; review 2 item 10).
        unreported = sfn.Pass(self, S.NO_RULE_STATUSES, result_path="$.run", parameters={
            "training_job.$": "$.run.training_job",
            "debugger": {"status": "unavailable", "reason.$": (
                "States.Format('SageMaker listed no rule statuses for training job {} although it ran with "
                "Debugger rules', $.run.training_job)")},
            "profiler": "unavailable" if dbg.active_profiler_rules else "off"})
        unreported.next(after_no_debugger)

        c = sfn.Condition
        timed_out = self._fail(S.RULES_TIMED_OUT, "RulesTimedOut",
                               cause=f"Debugger/Profiler rules were still running after {dbg.max_polls} checks "
                                     f"{dbg.poll_s} s apart; the endpoint was not changed.")
        wait = sfn.Wait(self, S.WAIT_RULES, time=sfn.WaitTime.duration(Duration.seconds(dbg.poll_s)))
        missing = self._fail(S.RULES_MISSING, "GateFailed", cause_path=(
            "States.Format('SageMaker did not list every configured rule for {} (statuses: {}); the endpoint was "
            "not changed.', $.names.training_job, $.rule_names.text)"))

        def polled(kinds_here: dict[str, str], suffix: str, then: sfn.IChainable) -> sfn.Pass:
            """Progress, done?, every rule listed?, verdicts, for the rule lists in `kinds_here`."""
            running: dict[str, str] = {"count.$": "States.MathAdd($.poll.rules.count, 1)"}
            for kind, path in kinds_here.items():
                for status in IN_PROGRESS:
                    running[f"{kind}_{status.lower()}.$"] = \
                        f"States.ArrayContains({path}[*].RuleEvaluationStatus, '{status}')"
                running[f"{kind}_listed.$"] = f"States.ArrayLength({path})"
                running[f"{kind}_stated.$"] = f"States.ArrayLength({path}[*].RuleEvaluationStatus)"
            progress = sfn.Pass(self, S.RULE_PROGRESS + suffix, parameters=running, result_path="$.poll.rules")
            still_running = c.or_(
                *[c.boolean_equals(f"$.poll.rules.{kind}_{status.lower()}", True)
                  for kind in kinds_here for status in IN_PROGRESS],
                *[c.not_(c.number_equals_json_path(f"$.poll.rules.{kind}_listed", f"$.poll.rules.{kind}_stated"))
                  for kind in kinds_here])
            statuses = {rule: f"{path}[?(@.RuleConfigurationName == '{rule}')].RuleEvaluationStatus"
                        for kind, path in kinds_here.items() for rule in rules_of[kind]}
            verdicts = sfn.Pass(self, S.VERDICTS + suffix, result_path="$.verdicts", parameters={
                f"{rule}.$": f"States.ArrayGetItem({path}, 0)" for rule, path in statuses.items()})
            # A filter that matches nothing is an error: first check that SageMaker lists every configured rule.
            texts = [f"States.JsonToString({path})" for path in kinds_here.values()]
            listed = sfn.Pass(self, S.RULE_NAMES + suffix, result_path="$.rule_names", parameters={
                "text.$": texts[0] if len(texts) == 1 else f"States.Format('{{}} {{}}', {', '.join(texts)})"})
            all_listed = (sfn.Choice(self, S.RULES_LISTED + suffix)
                          .when(c.or_(*[c.not_(c.string_matches("$.rule_names.text", f'*"{rule}"*'))
                                        for rule in statuses]), missing)
                          .otherwise(verdicts))
            listed.next(all_listed)
            done = (sfn.Choice(self, S.RULES_DONE + suffix)
                    .when(c.and_(still_running, c.number_greater_than_equals("$.poll.rules.count", dbg.max_polls)),
                          timed_out)
                    .when(still_running, wait)
                    .otherwise(listed))
            verdicts.next(then)
            progress.next(done)
            return progress

        def unlisted(path: str) -> sfn.Condition:  # absent or empty
            return c.or_(c.is_not_present(path), c.is_not_present(f"{path}[0]"))

        deciding = kinds.get("debug") or kinds["profiler"]
        reported = sfn.Choice(self, S.RULES_REPORTED).when(unlisted(deciding), unreported)
        if after_no_profiler is not None:  # both kinds configured: the profiler list alone may be missing
            profiler_unreported = sfn.Pass(self, S.NO_PROFILER_STATUSES, result_path="$.run.profiler",
                                           result=sfn.Result.from_string("unavailable"))
            profiler_unreported.next(after_no_profiler)
            reported.when(unlisted(kinds["profiler"]),
                          polled({"debug": kinds["debug"]}, S.NO_PROFILER_SUFFIX, profiler_unreported))
        reported.otherwise(polled(kinds, "", after))
        wait.next(describe)
        return describe.next(reported)

    def _reports(self, *, debugger: bool, profiler: bool = True) -> sfn.Pass:
        """Where the run's artifacts are. `debugger=False`: the job ran without Debugger (refused, or no rule
        statuses listed); `profiler=False`: Debugger rules ran but no profiler rule was listed, so the profiler's
        outputs are not promised."""
        dbg = self.cfg.debugger
        job = "$.run.training_job"

        def at(prefix: str, *parts: str) -> str:  # <prefix><job>/<parts>, SageMaker's layout (stackfacts)
            return f"States.Format('{req.s3(prefix)}{{}}/{'/'.join(parts)}', {job})"

        params: dict[str, Any] = {
            "model_artifacts.$": at(req.TRAINING_OUTPUT, facts.JOB_OUTPUT_DIR, facts.MODEL_ARCHIVE),
            "output_data.$": at(req.TRAINING_OUTPUT, facts.JOB_OUTPUT_DIR, facts.OUTPUT_ARCHIVE),
        }
        if debugger and (dbg.active_rules or dbg.active_profiler_rules):
            params["rule_output.$"] = at(req.TRAINING_OUTPUT, facts.RULE_OUTPUT_DIR, "")
        if debugger and dbg.active_rules:
            params["debugger_tensors.$"] = at(req.DEBUGGER_OUTPUT, facts.DEBUG_OUTPUT_DIR, "")
        if debugger and profiler and dbg.enabled and dbg.profiler:
            params["profiler_output.$"] = at(req.PROFILER_OUTPUT, facts.PROFILER_OUTPUT_DIR, "")
        if debugger and profiler and facts.PROFILER_REPORT_RULE in dbg.active_profiler_rules:
            params["profiler_report.$"] = at(req.TRAINING_OUTPUT, facts.profiler_report_key(facts.RULE_OUTPUT_DIR))
        name = (S.REPORTS if debugger or not dbg.enabled else S.REPORTS_NO_DEBUGGER) if profiler \
            else S.REPORTS_NO_PROFILER
        return sfn.Pass(self, name, parameters=params, result_path="$.reports")

    def _gate(self) -> sfn.IChainable:
        cfg, dbg = self.cfg, self.cfg.debugger
        acc, health = (f"$.training.metrics.{m}[0]" for m in (contract.TEST_ACCURACY, contract.HEALTH_ISSUES))
        choice = sfn.Choice(self, S.GATE, comment="Blocks the deploy; every failure leaves the endpoint untouched.")
        if cfg.gate.health_checks:
            choice.when(sfn.Condition.number_greater_than(health, 0), self._fail(
                S.HEALTH_FAILED, "GateFailed", cause_path=(
                    f"States.Format('The training script reported {{}} failed health check(s) "
                    f"({', '.join(contract.HEALTH_CHECKS)}); the endpoint was not changed. "
                    f"See {contract.HEALTH_FILE} in {{}}', {health}, $.reports.output_data)")))
        choice.when(sfn.Condition.number_less_than_json_path(acc, "$.args.min_test_accuracy"), self._fail(
            S.ACCURACY_LOW, "GateFailed", cause_path=(
                f"States.Format('{contract.TEST_ACCURACY} {{}} is below the minimum {{}}; the endpoint was not "
                f"changed.', {acc}, $.args.min_test_accuracy)")))
        choice.otherwise(self._deploy())
        if not dbg.active_gate_rules:
            return choice
        rules = sfn.Choice(self, S.GATE_RULES, comment="Rule verdicts block the deploy when Debugger ran.")
        rules.when(sfn.Condition.not_(sfn.Condition.string_equals("$.run.debugger.status", "on")), choice)
        for rule in dbg.active_gate_rules:
            rules.when(sfn.Condition.string_equals(f"$.verdicts.{rule}", contract.ISSUES_FOUND),
                       self._fail(S.rule_failed(rule), "GateFailed",
                                  cause=f"Debugger rule {rule} reported {contract.ISSUES_FOUND}; the endpoint was not "
                                        f"changed. See rule_output in the execution's report locations."))
        rules.when(sfn.Condition.or_(*[sfn.Condition.not_(sfn.Condition.string_equals(
            f"$.verdicts.{rule}", contract.NO_ISSUES)) for rule in dbg.active_gate_rules]),
            self._fail(S.RULE_INCOMPLETE, "GateFailed", cause_path=(
                "States.Format('A gating rule ended without a verdict (Error or Stopped); the endpoint was not "
                "changed. Verdicts: {}', States.JsonToString($.verdicts))")))
        return rules.otherwise(choice)

    def _deploy(self) -> sfn.IChainable:
        cfg = self.cfg
        s = cfg.serving
        deploy_failed = self._deploy_failed
        create_model = self._task(S.CREATE_MODEL, req.task_resource("createModel"), req.create_model(cfg),
                                  result_selector={"arn.$": "$.ModelArn"}, result_path="$.model")
        create_config = self._task(S.CREATE_CONFIG, req.task_resource("createEndpointConfig"),
                                   req.create_endpoint_config(cfg),
                                   result_selector={"arn.$": "$.EndpointConfigArn"}, result_path="$.endpoint_config")
        arn = {"arn.$": "$.EndpointArn"}
        create = self._task(S.CREATE_ENDPOINT, req.task_resource("createEndpoint"), req.create_endpoint(cfg),
                            result_selector=arn, result_path="$.deployment")
        update = self._task(S.UPDATE_ENDPOINT, req.task_resource("updateEndpoint"), req.update_endpoint(cfg),
                            result_selector=arn, result_path="$.deployment")
        # The endpoint is looked up before its config is made, so that an update's config can be sized from the
        # live fleet: $.fleet.update says which way "Create or update?" goes once the config exists.
        new_fleet = sfn.Pass(self, S.SIZE_NEW, result_path="$.fleet",
                             parameters={"instance_count": s.instance_count, "update": False})
        # Only "not found" creates the endpoint (see _lookup); throttling retries; anything else fails.
        find = self._lookup(S.FIND_ENDPOINT, "find", missing=new_fleet)
        # After "Deregister autoscaling target" a failure must give the live (old) fleet its target and policy back
        # before it fails with the original $.error (review 2 item 1: a refused blue/green update, e.g.
        # UpdateEndpoint's ResourceLimitExceeded when two fleets exceed the instance quota).
        after_update_failed = self._restore_if_removed(
            deploy_failed, S.SCALING_REMOVED, S.RESTORE_SCALING_FAILED, S.RESTORE_POLICY_FAILED) \
            if s.scales else deploy_failed
        for t in (create_model, create_config, create, update):
            self._retry_refusals(t)  # throttling here would otherwise end the run after the GPU hours
            t.add_catch(after_update_failed if t is update else deploy_failed, errors=["States.ALL"],
                        result_path="$.error")

        max_polls = s.max_polls
        wait_deploy = sfn.Wait(self, S.WAIT_DEPLOY, time=sfn.WaitTime.duration(Duration.seconds(s.poll_s)))
        describe = self._task(S.DESCRIBE_ENDPOINT, req.task_resource("describeEndpoint", sdk=True),
                              req.describe_endpoint(cfg), result_path="$.endpoint")
        self._retry_reads(describe)
        describe.add_catch(after_update_failed, errors=["States.ALL"], result_path="$.error")
        deployed = sfn.Pass(self, S.DEPLOYED, parameters=self._output())
        serving = self._autoscaling(deployed) if s.scales else deployed
        rolled_back = self._fail(
            S.ROLLED_BACK, "DeploymentRolledBack", cause_path=(
                "States.Format('SageMaker rolled endpoint {} back: it is InService without config {} (a "
                "rollback alarm fired or the new fleet failed); the previous model keeps serving.', "
                "$.names.endpoint, $.names.endpoint_config)"))
        status = "$.endpoint.EndpointStatus"
        in_service = sfn.Condition.string_equals(status, "InService")

        any_of = _any_of
        timed_out: sfn.IChainable = self._fail(
            S.DEPLOY_TIMED_OUT, "DeploymentTimedOut", cause_path=(
                f"States.Format('Endpoint {{}} was still {{}} after {max_polls} checks {s.poll_s} s apart; "
                f"see aws sagemaker describe-endpoint.', $.names.endpoint, $.endpoint.EndpointStatus)"))
        if s.scales:
            timed_out = self._restore_if_removed(timed_out, S.SCALING_REMOVED_TIMEOUT, S.RESTORE_SCALING_TIMEOUT,
                                                 S.RESTORE_POLICY_TIMEOUT)

        done = (sfn.Choice(self, S.DEPLOY_DONE)
                .when(sfn.Condition.and_(in_service, sfn.Condition.is_present("$.endpoint.EndpointConfigName"),
                                         sfn.Condition.string_equals_json_path(
                                             "$.endpoint.EndpointConfigName", "$.names.endpoint_config")), serving)
                .when(in_service, self._restore_scaling(rolled_back) if s.scales else rolled_back)
                .when(any_of(status, ENDPOINT_BROKEN), self._fail(
                    S.ENDPOINT_FAILED, "DeploymentFailed", cause_path=(
                        "States.Format('Endpoint {} is {} after deploying {}: see its FailureReason "
                        "(aws sagemaker describe-endpoint).', $.names.endpoint, $.endpoint.EndpointStatus, "
                        "$.names.endpoint_config)")))
                .when(sfn.Condition.number_greater_than_equals("$.poll.deploy.count", max_polls), timed_out)
                .otherwise(wait_deploy))
        wait_deploy.next(describe).next(self._counter(S.COUNT_DEPLOY, "deploy")).next(done)
        create.next(wait_deploy)
        update.next(wait_deploy)

        c = sfn.Condition
        # The update path: with autoscaling, leave Application Auto Scaling only when the instance type changes.
        # The live config's name is optional in DescribeEndpoint's answer (botocore): without it, the safe path.
        to_update = c.boolean_equals("$.fleet.update", True)
        create_or_update = sfn.Choice(self, S.CREATE_OR_UPDATE)
        if s.scales:
            create_or_update.when(c.and_(to_update, c.is_present("$.existing.EndpointConfigName")),
                                  self._scaling_before_update(update))
            create_or_update.when(to_update, self._deregister_scaling(update))
        else:
            create_or_update.when(to_update, update)
        create_or_update.otherwise(create)
        create_config.next(create_or_update)
        new_fleet.next(create_config)

        existing = "$.existing.EndpointStatus"
        settle = self._counter(S.COUNT_SETTLE, "settle")
        settle.next(sfn.Wait(self, S.WAIT_SETTLE, time=sfn.WaitTime.duration(Duration.seconds(s.poll_s)))).next(find)
        state = sfn.Choice(self, S.ENDPOINT_STATE)
        if s.serverless:
            state.when(sfn.Condition.and_(sfn.Condition.string_equals(existing, "InService"),
                                          self._instance_endpoint()), self._mode_change)
        (state.when(sfn.Condition.string_equals(existing, "InService"), self._size_update(create_config))
         .when(any_of(existing, ENDPOINT_BROKEN), self._endpoint_unusable)
         .when(sfn.Condition.number_greater_than_equals("$.poll.settle.count", max_polls), self._fail(
             S.SETTLE_TIMED_OUT, "EndpointBusy", cause_path=(
                 f"States.Format('Endpoint {{}} stayed {{}} for {max_polls} checks {s.poll_s} s apart (another "
                 f"deployment?); nothing was changed.', $.names.endpoint, $.existing.EndpointStatus)")))
         .otherwise(settle))  # Creating / Updating / SystemUpdating / RollingBack / Deleting: wait for it
        find.next(state)
        return create_model.next(find)

    def _size_update(self, then: sfn.IChainable) -> sfn.IChainable:
        """The new fleet of a blue/green update starts with no fewer instances than the live variant serves now
        (CurrentInstanceCount, an optional member of ProductionVariantSummary: IsPresent first), and with
        serving.instance_count when that is more. Autoscaling is blocked during an update
        (sagemaker/latest/dg/endpoint-scaling-update.html, step 2), and with RetainAllVariantProperties false the
        new config's InitialInstanceCount is what serves after the switch (API_UpdateEndpoint.html): sized from
        cdk.json alone, a scaled-out endpoint would drop to serving.instance_count under load for the whole update
        (review 3 N1). A serverless config has no instance count: the update goes on as configured."""
        s = self.cfg.serving
        configured = sfn.Pass(self, S.SIZE_CONFIGURED, result_path="$.fleet",
                              parameters={"instance_count": s.instance_count, "update": True})
        configured.next(then)
        if s.serverless:
            return configured
        live = "$.existing.ProductionVariants[0].CurrentInstanceCount"
        # A plain number, read once the Choice saw that variant 0 has it ([*] then ArrayGetItem: written when moto's
        # interpreter answered [0].member with a list; local/jsonpath.py now answers as AWS does, and both read this
        # form alike).
        read = sfn.Pass(self, S.LIVE_COUNT, result_path="$.live_fleet", parameters={
            "instance_count.$": "States.ArrayGetItem($.existing.ProductionVariants[*].CurrentInstanceCount, 0)"})
        keep = sfn.Pass(self, S.SIZE_LIVE, result_path="$.fleet",
                        parameters={"instance_count.$": "$.live_fleet.instance_count", "update": True})
        keep.next(then)
        c = sfn.Condition
        read.next(sfn.Choice(self, S.LIVE_LARGER)
                  .when(c.number_greater_than("$.live_fleet.instance_count", s.instance_count), keep)
                  .otherwise(configured))
        return (sfn.Choice(self, S.SIZE_UPDATE)
                .when(c.is_present(live), read)
                .otherwise(configured))

    def _scaling_before_update(self, update: sfn.IChainable) -> sfn.IChainable:
        """AWS refuses an update that changes the instance type of a variant that is a scalable target, and only
        then needs it deregistered first ("Steps 1 and 7 are only required when ... changing the instance type
        for a production variant that has autoscaling configured, or removing a production variant that has
        autoscaling configured": sagemaker/latest/dg/endpoint-scaling-update.html). So the live endpoint config is
        described (DescribeEndpointConfig, sagemaker/latest/APIReference/API_DescribeEndpointConfig.html): when
        its variant is this stack's variant on this stack's instance type, the target and its policy stay through
        the update; otherwise (another type, another variant, serverless, or the config cannot be read) the target
        is deregistered first and registered again after, as before."""
        s = self.cfg.serving
        describe = self._task(S.DESCRIBE_LIVE_CONFIG, req.task_resource("describeEndpointConfig", sdk=True),
                              req.describe_live_endpoint_config(), result_path="$.live_config")
        self._retry_reads(describe)
        deregister = self._deregister_scaling(update)
        # Unreadable (deleted by hand, access denied): the safe path, which works whatever the type.
        describe.add_catch(deregister, errors=["States.ALL"], result_path="$.live_config_error")
        variants = "$.live_config.ProductionVariants"
        c = sfn.Condition
        # The one variant's name and type as plain values, read once a Choice saw that variant 0 has an InstanceType
        # ([*] then ArrayGetItem: see "Live instance count").
        live = sfn.Pass(self, S.LIVE_VARIANT, result_path="$.live_variant", parameters={
            "name.$": f"States.ArrayGetItem({variants}[*].VariantName, 0)",
            "instance_type.$": f"States.ArrayGetItem({variants}[*].InstanceType, 0)"})
        live.next(sfn.Choice(self, S.TYPE_CHANGES)
                  .when(c.and_(c.string_equals("$.live_variant.name", req.VARIANT_NAME),
                               c.string_equals("$.live_variant.instance_type", s.instance_type)), update)
                  .otherwise(deregister))
        describe.next(sfn.Choice(self, S.LIVE_VARIANT_KNOWN)
                      .when(c.and_(c.is_present(f"{variants}[0]"), c.is_present(f"{variants}[0].InstanceType")), live)
                      .otherwise(deregister))
        return describe

    def _autoscaling(self, then: sfn.IChainable) -> sfn.IChainable:
        """After every deployment: register the variant (idempotent; an update deregistered it first, see
        _deregister_scaling) and put the target tracking policy. A refusal fails the execution with its cause; the
        new model already serves."""
        failed = self._fail(S.SCALING_FAILED, "AutoscalingFailed", cause_path=(
            "States.Format('Endpoint {} serves the new model, but its autoscaling was not applied: {}', "
            "$.names.endpoint, States.JsonToString($.error))"))
        return self._register_scaling((S.REGISTER_SCALING, S.SCALING_POLICY), then, on_error=failed,
                                      error_path="$.error")

    def _register_scaling(self, names: tuple[str, str], then: sfn.IChainable, *, on_error: sfn.IChainable,
                          error_path: str) -> sfn.IChainable:
        """Register the variant as a scalable target, then put cdk.json's target-tracking policy, then `then`;
        either refused (after retries) goes to `on_error` with the error at `error_path`."""
        cfg = self.cfg
        register = self._task(names[0], req.task_resource("registerScalableTarget", **_SCALING_SDK),
                              req.register_scalable_target(cfg), result_selector={"registered": True},
                              result_path="$.scaling.target")
        policy = self._task(names[1], req.task_resource("putScalingPolicy", **_SCALING_SDK),
                            req.put_scaling_policy(cfg), result_selector={"arn.$": "$.PolicyARN"},
                            result_path="$.scaling.policy")
        for t in (register, policy):  # ConcurrentUpdateException / throttling, whatever name the SDK gives them
            t.add_retry(errors=["States.TaskFailed"], interval=Duration.seconds(5), max_attempts=2, backoff_rate=2.0)
            t.add_catch(on_error, errors=["States.ALL"], result_path=error_path)
        register.next(policy).next(then)
        return register

    def _deregister_scaling(self, update: sfn.IChainable) -> sfn.IChainable:
        """Before an UpdateEndpoint that changes the instance type (or cannot tell, see _scaling_before_update):
        SageMaker refuses such an update of a variant that is a scalable target ("Update endpoints that use auto
        scaling", sagemaker/latest/dg/endpoint-scaling-update.html: deregister first, register again after); one
        state for every way here. Deregistering also deletes the target's scaling policy
        (application-autoscaling API_DeregisterScalableTarget); autoscaling is blocked during an update anyway, and
        "Register autoscaling target" re-applies cdk.json's bounds and policy once the new fleet serves (or the
        rollback branch restores them). Not registered (SCALING_NOT_FOUND) is fine: the update goes on."""
        if self._deregister is not None:
            return self._deregister
        cfg = self.cfg
        deregister = self._task(S.DEREGISTER_SCALING, req.task_resource("deregisterScalableTarget",
                                                                        **_SCALING_SDK),
                                req.deregister_scalable_target(cfg), result_selector={"deregistered": True},
                                result_path="$.scaling.deregistered")
        deregister.add_retry(errors=list(_SCALING_TRANSIENT), interval=Duration.seconds(5), max_attempts=2,
                             backoff_rate=2.0)
        c = sfn.Condition
        not_registered = (sfn.Choice(self, S.NOT_REGISTERED)
                          .when(c.or_(c.string_equals("$.error.Error", SCALING_NOT_FOUND[0]),
                                      c.and_(c.is_present("$.error.Cause"),
                                             c.string_matches("$.error.Cause", SCALING_NOT_FOUND[1]))), update)
                          .otherwise(self._deploy_failed))
        deregister.add_catch(not_registered, errors=["States.ALL"], result_path="$.error")
        self._deregister = deregister.next(update)
        return self._deregister

    def _restore_if_removed(self, then: sfn.IChainable, choice: str, register: str, policy: str) -> sfn.IChainable:
        """Restores the target only where "Deregister autoscaling target" removed one ($.scaling.deregistered is
        set only by its success): a failed create, or an update of a variant that was never registered, goes
        straight to `then`."""
        return (sfn.Choice(self, choice)
                .when(sfn.Condition.is_present("$.scaling.deregistered"),
                      self._restore_scaling(then, names=(register, policy)))
                .otherwise(then))

    def _restore_scaling(self, then: sfn.IChainable, *,
                         names: tuple[str, str] = (S.RESTORE_SCALING, S.RESTORE_POLICY)) -> sfn.IChainable:
        """A rolled-back or failed update leaves the previous fleet serving without the target "Deregister
        autoscaling target" removed: register it and its policy again, then fail with the original cause (whatever
        happens to the restore, `then` reports the rollback/failure from $.error; a refused restore is kept in
        $.scaling.restore_error and the execution's history)."""
        return self._register_scaling(names, then, on_error=then, error_path="$.scaling.restore_error")

    def _output(self) -> dict[str, Any]:
        return {
            "run_id.$": "$.names.run_id",
            "endpoint_name.$": "$.names.endpoint",
            "endpoint_config_name.$": "$.names.endpoint_config",
            "model_name.$": "$.names.model",
            "training_job_name.$": "$.run.training_job",
            "tuning_job_name.$": "$.names.tuning_job",
            "tuning_status.$": "$.tuning.status",
            "best_training_job_name.$": "$.tuning.best_training_job",
            "best_hyperparameters.$": "$.tuning.hyperparameters",
            "objective.$": "$.tuning.objective",
            "test_accuracy.$": f"States.ArrayGetItem($.training.metrics.{contract.TEST_ACCURACY}, 0)",
            "health_issues.$": f"States.ArrayGetItem($.training.metrics.{contract.HEALTH_ISSUES}, 0)",
            "debugger.$": "$.run.debugger",
            "profiler.$": "$.run.profiler",
            "rule_verdicts.$": "$.verdicts",
            "reports.$": "$.reports",
        }
