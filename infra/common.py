"""Small helpers shared by the stack's constructs."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
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


def log_group(scope, cid: str, cfg: StackConfig) -> logs.LogGroup:
    return logs.LogGroup(scope, cid, retention=retention(cfg.log_retention_days), removal_policy=removal(cfg))
