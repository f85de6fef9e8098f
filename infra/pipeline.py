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

from infra import sagemaker_requests as req
from infra.common import state_machine_log_group
from infra.config import RUN_ID_LENGTH, StackConfig
from ml import contract

IN_PROGRESS = ("InProgress", "Stopping")  # RuleEvaluationStatus values that are not a verdict yet
# Step Functions' names for a failed optimized / aws-sdk SageMaker call; TaskFailed matches any of them.
SAGEMAKER_ERRORS = ("SageMaker.AmazonSageMakerException", "States.TaskFailed")


# --- state names (local mode and tests refer to them) ----------------------------------------------------
class S:
    PREPARE = "Prepare run"
    APPLY_INPUT = "Apply input overrides"
    NAME = "Name resources"
    CHECK_INPUT = "Check input"
    INVALID_INPUT = "Invalid input"
    TUNE = "Tune hyperparameters"
    TUNE_WARM = "Tune hyperparameters (warm start)"
    TUNING_FAILED = "Tuning failed"
    PREPARE_TRAINING = "Prepare training"
    TRAIN = "Train with best hyperparameters"
    TRAINING_FAILED = "Training failed"
    DESCRIBE_TRAINING = "Describe training job"
    RULE_PROGRESS = "Check rule progress"
    RULES_DONE = "Rules finished?"
    WAIT_RULES = "Wait for rule evaluations"
    RULES_TIMED_OUT = "Rule evaluations timed out"
    VERDICTS = "Collect rule verdicts"
    REPORTS = "Report locations"
    GATE = "Gate"
    METRICS_MISSING = "Gate: metrics missing"
    RULE_INCOMPLETE = "Gate: rule not evaluated"
    HEALTH_FAILED = "Gate: health checks failed"
    ACCURACY_LOW = "Gate: test accuracy too low"
    CREATE_MODEL = "Create model"
    CREATE_CONFIG = "Create endpoint config"
    FIND_ENDPOINT = "Find endpoint"
    ENDPOINT_STATE = "Endpoint status?"
    WAIT_SETTLE = "Wait for endpoint to settle"
    ENDPOINT_UNUSABLE = "Endpoint unusable"
    CREATE_ENDPOINT = "Create endpoint"
    UPDATE_ENDPOINT = "Update endpoint"
    WAIT_DEPLOY = "Wait for deployment"
    DESCRIBE_ENDPOINT = "Describe endpoint"
    DEPLOY_DONE = "Deployment finished?"
    ROLLED_BACK = "Deployment rolled back"
    DEPLOY_FAILED = "Deployment failed"
    ENDPOINT_FAILED = "Endpoint failed"
    DEPLOYED = "Deployed"

    @staticmethod
    def rule_failed(rule: str) -> str:
        return f"Gate: {rule} found issues"


def _metric_path(name: str) -> str:
    return f"$.FinalMetricDataList[?(@.MetricName == '{name}')].Value"


class Pipeline(Construct):
    """The state machine with its log group; IAM for what it calls is added by infra.security."""

    def __init__(self, scope: Construct, cid: str, *, cfg: StackConfig, role: iam.IRole,
                 substitutions: dict[str, str]) -> None:
        super().__init__(scope, cid)
        self.cfg = cfg
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
    def _task(self, name: str, resource: str, parameters: dict[str, Any], *, result_selector: dict,
              result_path: str) -> sfn.CustomState:
        """A Task whose answer is trimmed (ResultSelector: never the whole description in state) and stored
        under its own key (a missing ResultPath would replace the whole state with the answer)."""
        state = {"Type": "Task", "Resource": resource, "Parameters": parameters,
                 "ResultSelector": result_selector, "ResultPath": result_path}
        return sfn.CustomState(self, name, state_json=state)

    def _fail(self, name: str, error: str, *, cause: str | None = None, cause_path: str | None = None) -> sfn.Fail:
        return sfn.Fail(self, name, error=error, cause=cause, cause_path=cause_path)

    # --- the definition ----------------------------------------------------------------------------
    def _definition(self) -> sfn.IChainable:
        cfg = self.cfg
        dbg = cfg.debugger
        bucket_data = req.s3(cfg.data_prefix)

        defaults: dict[str, Any] = {
            "dataset": bucket_data,
            "max_jobs": cfg.tuning.max_jobs,
            "max_parallel_jobs": cfg.tuning.max_parallel_jobs,
            "min_test_accuracy": cfg.gate.min_test_accuracy,
            # 12 hex characters of a fresh UUID: unique per execution and short enough for the 32-character
            # tuning job name. Computed once, so a redrive reuses the execution's names.
            "run_id.$": "States.ArrayGetItem(States.StringSplit(States.UUID(), '-'), 4)",
        }
        if cfg.tuning.warm_start_parent:
            defaults["warm_start_parent"] = cfg.tuning.warm_start_parent
        prepare = sfn.Pass(self, S.PREPARE, parameters={"defaults": defaults, "input.$": "$"},
                           comment="Defaults from cdk.json context; any of them may be given in the input.")
        apply_input = sfn.Pass(self, S.APPLY_INPUT,
                               parameters={"args.$": "States.JsonMerge($.defaults, $.input, false)"})
        base = f"States.Format('{cfg.prefix}-{{}}', $.args.run_id)"
        name = sfn.Pass(self, S.NAME, parameters={
            "args.$": "$.args",
            "names": {"run_id.$": "$.args.run_id", "tuning_job.$": base, "training_job.$": base, "model.$": base,
                      "endpoint_config.$": base, "endpoint": cfg.endpoint_name},
            "poll": {"count": 0},
        }, comment=f"Every SageMaker name is <prefix>-<run id> ({RUN_ID_LENGTH} hex); the endpoint name is stable.")

        invalid = self._fail(S.INVALID_INPUT, "InvalidInput",
                             cause=f"'dataset' must be an s3:// prefix under {bucket_data} ending with '/', holding "
                                   f"{', '.join(f'{c}/' for c in contract.CHANNELS)} (one folder per class in each).")
        tuning_failed = self._fail(S.TUNING_FAILED, "TuningFailed", cause_path="$.error.Cause")
        training_failed = self._fail(S.TRAINING_FAILED, "TrainingFailed", cause_path="$.error.Cause")
        self._deploy_failed = self._fail(S.DEPLOY_FAILED, "DeploymentFailed", cause_path="$.error.Cause")

        best = {"job_name.$": "$.HyperParameterTuningJobName",
                "best_training_job.$": "$.BestTrainingJob.TrainingJobName",
                "hyperparameters.$": "$.BestTrainingJob.TunedHyperParameters",
                "objective.$": "$.BestTrainingJob.FinalHyperParameterTuningJobObjectiveMetric"}
        tune = self._task(S.TUNE, req.task_resource("createHyperParameterTuningJob", sync=True),
                          req.tuning_job(cfg, warm_start=False), result_selector=best, result_path="$.tuning")
        tune_warm = self._task(S.TUNE_WARM, req.task_resource("createHyperParameterTuningJob", sync=True),
                               req.tuning_job(cfg, warm_start=True), result_selector=best, result_path="$.tuning")
        for t in (tune, tune_warm):
            t.add_catch(tuning_failed, errors=["States.ALL"], result_path="$.error")

        prepare_training = sfn.Pass(
            self, S.PREPARE_TRAINING, result_path="$.hyperparameters",
            parameters={"static": req.static_hyperparameters(cfg, debugger=dbg.enabled)},
            comment="Static hyperparameters; the train task merges the best trial's tuned values over them.")
        metrics = {m: _metric_path(m) for m in (contract.TEST_ACCURACY, contract.HEALTH_ISSUES)}
        train = self._task(S.TRAIN, req.task_resource("createTrainingJob", sync=True), req.training_job(cfg),
                           result_selector={"job_name.$": "$.TrainingJobName",
                                            "model_data.$": "$.ModelArtifacts.S3ModelArtifacts",
                                            "metrics": {f"{k}.$": v for k, v in metrics.items()}},
                           result_path="$.training")
        train.add_catch(training_failed, errors=["States.ALL"], result_path="$.error")

        reports = self._reports()
        gate = self._gate()
        reports.next(gate)

        check_input = (sfn.Choice(self, S.CHECK_INPUT)
                       .when(sfn.Condition.not_(sfn.Condition.or_(
                           sfn.Condition.string_equals("$.args.dataset", bucket_data),
                           sfn.Condition.string_matches("$.args.dataset", f"{bucket_data}*/"))), invalid)
                       .when(sfn.Condition.is_present("$.args.warm_start_parent"), tune_warm)
                       .otherwise(tune))
        tune.next(prepare_training)
        tune_warm.next(prepare_training)
        prepare_training.next(train)
        if dbg.enabled and (dbg.active_rules or dbg.active_profiler_rules):
            train.next(self._rule_wait(reports, training_failed))
        else:
            train.next(reports)
        return prepare.next(apply_input).next(name).next(check_input)

    def _rule_wait(self, after: sfn.IChainable, failed: sfn.IChainable) -> sfn.IChainable:
        """.sync ends with the training job, not with its rule jobs: poll until every rule has a verdict."""
        dbg = self.cfg.debugger
        selector: dict[str, Any] = {"verdicts": {}}
        if dbg.active_rules:
            selector["debug.$"] = "$.DebugRuleEvaluationStatuses[*].RuleEvaluationStatus"
        if dbg.active_profiler_rules:
            selector["profiler.$"] = "$.ProfilerRuleEvaluationStatuses[*].RuleEvaluationStatus"
        for key, rules in (("Debug", dbg.active_rules), ("Profiler", dbg.active_profiler_rules)):
            for rule in rules:
                selector["verdicts"][f"{rule}.$"] = (f"$.{key}RuleEvaluationStatuses[?(@.RuleConfigurationName == "
                                                     f"'{rule}')].RuleEvaluationStatus")
        describe = self._task(S.DESCRIBE_TRAINING, req.task_resource("describeTrainingJob", sdk=True),
                              req.describe_training_job(), result_selector=selector, result_path="$.rules")
        describe.add_retry(errors=["States.TaskFailed"], interval=Duration.seconds(5), max_attempts=3,
                           backoff_rate=2.0)
        describe.add_catch(failed, errors=["States.ALL"], result_path="$.error")

        running = {"count.$": "States.MathAdd($.poll.count, 1)"}
        kinds = [k for k in ("debug", "profiler") if f"{k}.$" in selector]
        for kind in kinds:
            for status in IN_PROGRESS:
                running[f"{kind}_{status.lower()}.$"] = f"States.ArrayContains($.rules.{kind}, '{status}')"
        progress = sfn.Pass(self, S.RULE_PROGRESS, parameters=running, result_path="$.poll")
        still_running = sfn.Condition.or_(*[
            sfn.Condition.boolean_equals(f"$.poll.{kind}_{status.lower()}", True)
            for kind in kinds for status in IN_PROGRESS])
        timed_out = self._fail(S.RULES_TIMED_OUT, "RulesTimedOut",
                               cause=f"Debugger/Profiler rules were still running after {dbg.max_polls} checks "
                                     f"{dbg.poll_s} s apart; the endpoint was not changed.")
        wait = sfn.Wait(self, S.WAIT_RULES, time=sfn.WaitTime.duration(Duration.seconds(dbg.poll_s)))
        verdicts = sfn.Pass(self, S.VERDICTS, result_path="$.verdicts", parameters={
            f"{rule}.$": f"States.ArrayGetItem($.rules.verdicts.{rule}, 0)"
            for rule in (*dbg.active_rules, *dbg.active_profiler_rules)})
        done = (sfn.Choice(self, S.RULES_DONE)
                .when(sfn.Condition.and_(still_running,
                                         sfn.Condition.number_greater_than_equals("$.poll.count", dbg.max_polls)),
                      timed_out)
                .when(still_running, wait)
                .otherwise(verdicts))
        wait.next(describe)
        verdicts.next(after)
        return describe.next(progress).next(done)

    def _reports(self) -> sfn.Pass:
        dbg = self.cfg.debugger
        job = "$.names.training_job"
        params: dict[str, Any] = {
            "model_artifacts.$": "$.training.model_data",
            "output_data.$": f"States.Format('{req.s3(req.TRAINING_OUTPUT)}{{}}/output/output.tar.gz', {job})",
        }
        if dbg.active_rules or dbg.active_profiler_rules:
            params["rule_output.$"] = f"States.Format('{req.s3(req.TRAINING_OUTPUT)}{{}}/rule-output/', {job})"
        if dbg.active_rules:
            params["debugger_tensors.$"] = f"States.Format('{req.s3(req.DEBUGGER_OUTPUT)}{{}}/debug-output/', {job})"
        if dbg.enabled and dbg.profiler:
            params["profiler_output.$"] = (f"States.Format('{req.s3(req.PROFILER_OUTPUT)}{{}}/profiler-output/', "
                                           f"{job})")
        if "ProfilerReport" in dbg.active_profiler_rules:
            params["profiler_report.$"] = (f"States.Format('{req.s3(req.TRAINING_OUTPUT)}{{}}/rule-output/"
                                           f"ProfilerReport/profiler-output/profiler-report.html', {job})")
        return sfn.Pass(self, S.REPORTS, parameters=params, result_path="$.reports")

    def _gate(self) -> sfn.IChainable:
        cfg, dbg = self.cfg, self.cfg.debugger
        acc, health = (f"$.training.metrics.{m}[0]" for m in (contract.TEST_ACCURACY, contract.HEALTH_ISSUES))
        choice = sfn.Choice(self, S.GATE, comment="Blocks the deploy; every failure leaves the endpoint untouched.")
        choice.when(sfn.Condition.or_(sfn.Condition.is_not_present(acc), sfn.Condition.is_not_present(health)),
                    self._fail(S.METRICS_MISSING, "GateFailed",
                               cause=f"The training job reported no final {contract.TEST_ACCURACY} / "
                                     f"{contract.HEALTH_ISSUES} metric; the endpoint was not changed."))
        for rule in dbg.active_gate_rules:
            choice.when(sfn.Condition.string_equals(f"$.verdicts.{rule}", contract.ISSUES_FOUND),
                        self._fail(S.rule_failed(rule), "GateFailed",
                                   cause=f"Debugger rule {rule} reported {contract.ISSUES_FOUND}; the endpoint was not "
                                         f"changed. See rule_output in the execution's report locations."))
        if dbg.active_gate_rules:
            choice.when(sfn.Condition.or_(*[sfn.Condition.not_(sfn.Condition.string_equals(
                f"$.verdicts.{rule}", contract.NO_ISSUES)) for rule in dbg.active_gate_rules]),
                self._fail(S.RULE_INCOMPLETE, "GateFailed", cause_path=(
                    "States.Format('A gating rule ended without a verdict (Error or Stopped); the endpoint was not "
                    "changed. Verdicts: {}', States.JsonToString($.verdicts))")))
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
        return choice.otherwise(self._deploy())

    def _deploy(self) -> sfn.IChainable:
        cfg = self.cfg
        deploy_failed = self._deploy_failed
        create_model = self._task(S.CREATE_MODEL, req.task_resource("createModel"), req.create_model(cfg),
                                  result_selector={"arn.$": "$.ModelArn"}, result_path="$.model")
        create_config = self._task(S.CREATE_CONFIG, req.task_resource("createEndpointConfig"),
                                   req.create_endpoint_config(cfg),
                                   result_selector={"arn.$": "$.EndpointConfigArn"}, result_path="$.endpoint_config")
        endpoint = {"status.$": "$.EndpointStatus", "config.$": "$.EndpointConfigName"}
        find = self._task(S.FIND_ENDPOINT, req.task_resource("describeEndpoint", sdk=True),
                          req.describe_endpoint(cfg), result_selector=endpoint, result_path="$.existing")
        arn = {"arn.$": "$.EndpointArn"}
        create = self._task(S.CREATE_ENDPOINT, req.task_resource("createEndpoint"), req.create_endpoint(cfg),
                            result_selector=arn, result_path="$.deployment")
        update = self._task(S.UPDATE_ENDPOINT, req.task_resource("updateEndpoint"), req.update_endpoint(cfg),
                            result_selector=arn, result_path="$.deployment")
        # DescribeEndpoint on a missing endpoint fails: that is the "first deploy" branch, not an error.
        find.add_catch(create, errors=list(SAGEMAKER_ERRORS), result_path="$.lookup_error")
        for t in (create_model, create_config, create, update):
            t.add_catch(deploy_failed, errors=["States.ALL"], result_path="$.error")

        wait_deploy = sfn.Wait(self, S.WAIT_DEPLOY, time=sfn.WaitTime.duration(Duration.seconds(cfg.serving.poll_s)))
        describe = self._task(S.DESCRIBE_ENDPOINT, req.task_resource("describeEndpoint", sdk=True),
                              req.describe_endpoint(cfg), result_selector=endpoint, result_path="$.endpoint")
        describe.add_retry(errors=["States.TaskFailed"], interval=Duration.seconds(5), max_attempts=3,
                           backoff_rate=2.0)
        describe.add_catch(deploy_failed, errors=["States.ALL"], result_path="$.error")
        deployed = sfn.Pass(self, S.DEPLOYED, parameters=self._output())
        in_service = sfn.Condition.string_equals("$.endpoint.status", "InService")
        done = (sfn.Choice(self, S.DEPLOY_DONE)
                .when(sfn.Condition.and_(in_service, sfn.Condition.string_equals_json_path(
                    "$.endpoint.config", "$.names.endpoint_config")), deployed)
                .when(in_service, self._fail(
                    S.ROLLED_BACK, "DeploymentRolledBack", cause_path=(
                        "States.Format('SageMaker rolled endpoint {} back to {} (a rollback alarm fired or the new "
                        "fleet failed); the previous model keeps serving.', $.names.endpoint, $.endpoint.config)")))
                .when(sfn.Condition.string_equals("$.endpoint.status", "Failed"), self._fail(
                    S.ENDPOINT_FAILED, "DeploymentFailed", cause_path=(
                        "States.Format('Endpoint {} is Failed after deploying {}: see its FailureReason "
                        "(aws sagemaker describe-endpoint).', $.names.endpoint, $.names.endpoint_config)")))
                .otherwise(wait_deploy))
        wait_deploy.next(describe).next(done)
        create.next(wait_deploy)
        update.next(wait_deploy)

        settle = sfn.Wait(self, S.WAIT_SETTLE, time=sfn.WaitTime.duration(Duration.seconds(cfg.serving.poll_s)))
        settle.next(find)
        state = (sfn.Choice(self, S.ENDPOINT_STATE)
                 .when(sfn.Condition.string_equals("$.existing.status", "InService"), update)
                 .when(sfn.Condition.or_(sfn.Condition.string_equals("$.existing.status", "Failed"),
                                         sfn.Condition.string_equals("$.existing.status", "OutOfService")),
                       self._fail(S.ENDPOINT_UNUSABLE, "EndpointUnusable", cause_path=(
                           f"States.Format('Endpoint {{}} is {{}} and cannot be updated: delete it (aws sagemaker "
                           f"delete-endpoint --endpoint-name {cfg.endpoint_name}) and start a new execution; "
                           f"model {{}} is ready for it.', $.names.endpoint, $.existing.status, $.names.model)")))
                 .otherwise(settle))  # Creating / Updating / RollingBack / Deleting: another run is deploying
        return create_model.next(create_config).next(find).next(state)

    def _output(self) -> dict[str, Any]:
        dbg = self.cfg.debugger
        rules = (*dbg.active_rules, *dbg.active_profiler_rules)
        return {
            "endpoint_name.$": "$.names.endpoint",
            "endpoint_config_name.$": "$.names.endpoint_config",
            "model_name.$": "$.names.model",
            "training_job_name.$": "$.names.training_job",
            "tuning_job_name.$": "$.names.tuning_job",
            "best_training_job_name.$": "$.tuning.best_training_job",
            "best_hyperparameters.$": "$.tuning.hyperparameters",
            "objective.$": "$.tuning.objective",
            "test_accuracy.$": f"States.ArrayGetItem($.training.metrics.{contract.TEST_ACCURACY}, 0)",
            "health_issues.$": f"States.ArrayGetItem($.training.metrics.{contract.HEALTH_ISSUES}, 0)",
            **({"rule_verdicts.$": "$.verdicts"} if rules else {"rule_verdicts": {}}),
            "reports.$": "$.reports",
        }

