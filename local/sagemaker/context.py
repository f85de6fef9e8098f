"""What a job or an endpoint may use of the stand-in that runs it: one narrow context, built once by the service.

Training jobs, tuning jobs, rule jobs and endpoints (local.sagemaker.training, tuning, rule_jobs, hosting, scaling)
take this, never the LocalSageMaker itself: they share its lock, its progress events, its local S3 and its settings,
and none of its tables or operations. A resource that starts another is handed a narrow callable for it (a tuning
job's `start_trial`), so the service stays the only place that registers resources.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from local.sagemaker.api import arn
from local.sagemaker.s3 import LocalS3


@dataclass(frozen=True, eq=False)  # compared by identity: it is the owner of the stand-in's child processes
class Context:
    work_dir: Path  # the stand-in's working directory (package docs of local.sagemaker: its layout)
    s3: LocalS3  # the local S3 root; every call is authorized against the role given
    lock: threading.RLock  # guards every resource's state (descriptions, fleets): one lock for the whole stand-in
    emit: Callable[[dict], None]  # a progress event to the listeners (the event types: local.sagemaker.service)
    region: str
    account: str
    python: str  # the interpreter of training jobs without Debugger and of endpoint servers
    repo_root: Path  # on the children's PYTHONPATH (local.endpoint_server, local.sagemaker.rules)
    source_dir: Path  # the training code used when sagemaker_submit_directory is not in the local S3 root
    stop_grace_seconds: float  # SIGTERM, then SIGKILL after this long (StopTrainingJob, a retired server)
    endpoint_startup_timeout: float  # an endpoint server must pass /ping within this long
    shutdown: threading.Event = field(default_factory=threading.Event)  # set by close(): start nothing more

    @property
    def closed(self) -> bool:
        return self.shutdown.is_set()

    def arn(self, kind: str, name: str) -> str:
        """A resource's ARN in this stand-in's account and region."""
        return arn(kind, name, self.region, self.account)
