"""Small helpers shared by the stack's constructs."""

from __future__ import annotations

from aws_cdk import Aws, Fn, RemovalPolicy
from aws_cdk import aws_logs as logs

from infra.config import StackConfig

# CloudWatch Logs' allowed retentions (days -> CDK enum member).
_RETENTION: dict[int, str] = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH",
    60: "TWO_MONTHS", 90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS",
    365: "ONE_YEAR", 400: "THIRTEEN_MONTHS", 545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS",
    1827: "FIVE_YEARS", 2192: "SIX_YEARS", 2557: "SEVEN_YEARS", 2922: "EIGHT_YEARS", 3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}


def retention(days: int) -> logs.RetentionDays:
    """The shortest retention CloudWatch offers that keeps logs at least `days` days."""
    allowed = next((d for d in sorted(_RETENTION) if d >= days), 3653)
    return getattr(logs.RetentionDays, _RETENTION[allowed])


def removal(cfg: StackConfig) -> RemovalPolicy:
    return RemovalPolicy.DESTROY if cfg.removal_policy == "destroy" else RemovalPolicy.RETAIN


def log_group(scope, cid: str, cfg: StackConfig, name: str | None = None) -> logs.LogGroup:
    return logs.LogGroup(scope, cid, log_group_name=name, retention=retention(cfg.log_retention_days),
                         removal_policy=removal(cfg))


# Step Functions delivers logs through CloudWatch Logs' vended-log delivery, which adds the log group to an
# account-wide resource policy capped at 5,120 characters unless the group's name starts with /aws/vendedlogs/:
# https://docs.aws.amazon.com/step-functions/latest/dg/bp-cwl.html
VENDED_LOGS_PREFIX = "/aws/vendedlogs/states/"


def state_machine_log_group(scope, cid: str, cfg: StackConfig, machine: str | None = None) -> logs.LogGroup:
    """A state machine's log group under /aws/vendedlogs/states/ (`machine`: the pipeline's by default). The stack
    id's unique part ends the name: a retained group (removal_policy retain) never blocks deploying the stack again
    after `cdk destroy`."""
    stack_uuid = Fn.select(2, Fn.split("/", Aws.STACK_ID))
    return log_group(scope, cid, cfg, name=f"{VENDED_LOGS_PREFIX}{machine or cfg.state_machine_name}-{stack_uuid}")
