"""Where the calls go: real AWS clients, or the recording a local run left in its output folder.

Nothing above this module knows which one it talks to: the verbs and the report only call client methods.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from cli import config
from cli.errors import CliError, error_code

log = logging.getLogger(__name__)

# States in which a stack's outputs cannot be trusted (or no longer exist).
BROKEN_STACK_STATES = frozenset({"CREATE_FAILED", "ROLLBACK_IN_PROGRESS", "ROLLBACK_FAILED", "ROLLBACK_COMPLETE",
                                 "DELETE_IN_PROGRESS", "DELETE_FAILED", "DELETE_COMPLETE"})


class StackMissing(CliError):
    """The stack is not deployed (or is being deleted): teardown can still work from the name prefix."""


@dataclass
class Backend:
    sagemaker: Any
    stepfunctions: Any
    cloudformation: Any
    cloudwatch: Any
    s3: Any
    region: str
    stack_name: str
    local_dir: Path | None = None  # set for a recorded local run
    servicequotas: Any = None  # AWS only: `start` checks the training-instance quotas
    _outputs: dict[str, str] | None = field(default=None, repr=False)

    @property
    def is_local(self) -> bool:
        return self.local_dir is not None

    @property
    def source(self) -> str:
        return f"the local run in {self.local_dir}" if self.local_dir else f"AWS ({self.region})"

    def stack_outputs(self) -> dict[str, str]:
        if self._outputs is None:
            try:
                stacks = self.cloudformation.describe_stacks(StackName=self.stack_name)["Stacks"]
            except ClientError as exc:
                if error_code(exc) == "ValidationError" and "does not exist" in str(exc):
                    where = f"in {self.local_dir}" if self.local_dir else f"in {self.region}"
                    hint = "run `make demo` first" if self.local_dir else "deploy it with `npx cdk deploy`"
                    raise StackMissing(f"stack {self.stack_name} is not deployed {where} ({hint}, or pass --stack"
                                       f"{'' if self.local_dir else ' / --region'})") from None
                raise
            if not stacks:
                raise StackMissing(f"stack {self.stack_name} is not deployed in {self.region}")
            stack = stacks[0]
            status = stack.get("StackStatus", "")
            if status in BROKEN_STACK_STATES:
                raise StackMissing(f"stack {self.stack_name} is in state {status}: deploy it again")
            self._outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}
        return self._outputs

    def output(self, key: str, purpose: str) -> str:
        outputs = self.stack_outputs()
        value = outputs.get(key)
        if not value:
            have = ", ".join(sorted(outputs)) or "none"
            raise CliError(f"stack {self.stack_name} has no output {key!r} (needed {purpose}); its outputs: {have}")
        return value

    def optional_output(self, key: str) -> str | None:
        return self.stack_outputs().get(key) or None

    def known_output(self, key: str) -> str | None:
        """An output of a stack already read, else None: no call (what a view adds when it can, like a link)."""
        return (self._outputs or {}).get(key) or None


def aws_backend(region: str | None = None, profile: str | None = None,
                stack_name: str = config.DEFAULT_STACK_NAME) -> Backend:
    import boto3
    from botocore.config import Config

    session = boto3.Session(profile_name=profile, region_name=region)
    if not session.region_name:
        raise CliError("no AWS region configured: pass --region or set AWS_REGION")
    # Standard retries absorb throttling (with backoff) before a user ever sees it.
    client_config = Config(retries={"mode": "standard", "max_attempts": 6}, connect_timeout=5, read_timeout=60,
                           user_agent_extra="imgclf")

    def client(name: str) -> Any:
        return session.client(name, config=client_config)

    return Backend(sagemaker=client("sagemaker"), stepfunctions=client("stepfunctions"),
                   cloudformation=client("cloudformation"), cloudwatch=client("cloudwatch"), s3=client("s3"),
                   region=session.region_name, stack_name=stack_name, servicequotas=client("service-quotas"))


def local_backend(directory: str | Path, stack_name: str | None = None) -> Backend:
    from cli.recording.reader import RecordedClient, RecordedS3, recorded_region, recorded_stacks

    root = Path(directory)
    if not root.is_dir():
        raise CliError(f"no local run in {root}: run `make demo` first (or pass --local DIR)")
    if stack_name is None:
        stacks = recorded_stacks(root)
        stack_name = stacks[0] if len(stacks) == 1 else config.DEFAULT_STACK_NAME
    return Backend(sagemaker=RecordedClient(root, "sagemaker"), stepfunctions=RecordedClient(root, "stepfunctions"),
                   cloudformation=RecordedClient(root, "cloudformation"), cloudwatch=RecordedClient(root, "cloudwatch"),
                   s3=RecordedS3(root / "s3"), region=recorded_region(root), stack_name=stack_name, local_dir=root)
