"""Hosting: models, endpoint configs and endpoints served by local endpoint-server processes.

Each production variant runs one `python -m local.endpoint_server` per instance (InitialInstanceCount, later
DesiredInstanceCount), each on a free port. One stable runtime URL (the RuntimeProxy) answers sagemaker-runtime's
InvokeEndpoint at /endpoints/<name>/invocations: it picks a variant by weight, then one of its instances in service
by the variant's RoutingConfig (RANDOM, SageMaker's default, or LEAST_OUTSTANDING_REQUESTS), so
AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME never changes. DescribeEndpoint's CurrentInstanceCount counts the instances that
answer /ping, DesiredInstanceCount the ones asked for.
UpdateEndpoint is blue/green: the old servers answer until all the new ones pass /ping, then traffic switches and
the old ones finish their requests and stop. A failed update leaves the old servers in service (status InService
with a FailureReason), as SageMaker rolls back. UpdateEndpointWeightsAndCapacities (what Application Auto Scaling
calls; local.sagemaker.scaling applies the registered policy) adds servers, which take requests once they pass
/ping, or retires them: out of routing first, drained, then stopped, so a scale-in drops no request.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local.endpoint_server import ModelSourceError, resolve_model
from local.sagemaker import processes
from local.sagemaker.api import now
from local.sagemaker.context import Context
from local.sagemaker.s3 import S3Denied
from local.wsgi import REQUEST_TIMEOUT_S

if TYPE_CHECKING:
    from local.sagemaker.scaling import ScalingRegistry

LISTENING = re.compile(r"listening on http://([^:\s]+):(\d+)")
INVOKE_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
INVOKE_TIMEOUT = 60.0  # InvokeEndpoint's limit per request
MAX_BODY = 16 * 1024 * 1024
MAX_REPLACEMENTS = 5  # dead servers replaced per variant before the endpoint is Failed
MODEL_DOWNLOAD = ("Failed to download model data for container \"container_1\" from URL: \"{url}\". Please ensure "
                  "that there is an object located at the URL and that the role passed to CreateModel has "
                  "permissions to download the object")


@dataclass(eq=False)
class Backend:
    """One instance of a production variant: one endpoint server process."""

    variant: str
    group: Variant
    proc: subprocess.Popen | None = None
    port: int | None = None
    log_path: Path | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    inflight: int = 0
    served: int = 0  # requests routed to it
    idle: threading.Condition = field(default_factory=threading.Condition)
    stopping: bool = False  # stop() was called: its process ending is not a death to replace
    restarts: int = 0
    started: float = field(default_factory=time.monotonic)

    def enter(self) -> None:
        with self.idle:
            self.inflight += 1
            self.served += 1

    def leave(self) -> None:
        with self.idle:
            self.inflight -= 1
            self.idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait for the requests this server is answering (blue/green and scale-in: it finishes its work)."""
        with self.idle:
            return self.idle.wait_for(lambda: self.inflight == 0, timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def model_copy(self) -> Path | None:
        return self.group.model_copy

    @property
    def model_name(self) -> str:
        return self.group.model_name

    def stop(self, grace: float = 5.0) -> None:
        self.stopping = True
        self.ready.clear()
        if self.proc is not None:
            processes.terminate(self.proc, grace)


@dataclass(eq=False)
class Variant:
    """One production variant: its instances (server processes) and the metric its scaling policy reads."""

    name: str
    model_name: str
    weight: float
    image: str
    model_path: Path
    environment: dict
    desired: int = 1
    routing: str = "RANDOM"  # ProductionVariant.RoutingConfig.RoutingStrategy; SageMaker's default is RANDOM
    instances: list[Backend] = field(default_factory=list)
    model_copy: Path | None = None  # the extracted model.tar.gz, shared by its instances (a killed one cannot clean up)
    extracting: threading.Lock = field(default_factory=threading.Lock)
    # (monotonic time, 1 / instances in service) per invocation: the SageMakerVariantInvocationsPerInstance sum
    invocations: deque = field(default_factory=lambda: deque(maxlen=1_000_000))
    metric_lock: threading.Lock = field(default_factory=threading.Lock)

    def in_service(self) -> list[Backend]:
        return [b for b in self.instances if b.ready.is_set()]

    def choose(self) -> Backend | None:
        """An instance for one request (the caller holds the stand-in's lock), counted for the metric."""
        ready = self.in_service()
        if not ready:
            return None
        if self.routing == "LEAST_OUTSTANDING_REQUESTS":
            fewest = min(b.inflight for b in ready)
            chosen = random.choice([b for b in ready if b.inflight == fewest])
        else:
            chosen = random.choice(ready)
        with self.metric_lock:
            self.invocations.append((time.monotonic(), 1.0 / len(ready)))
        return chosen

    def invocations_in(self, start: float, end: float) -> tuple[int, float]:
        """(invocations, invocations per instance) in [start, end): each one counted as 1 / the instances in
        service when it came (CloudWatch's InvocationsPerInstance: Invocations / InstanceCount, summed)."""
        with self.metric_lock:
            shares = [share for t, share in self.invocations if start <= t < end]
        return len(shares), sum(shares)

    def forget_invocations(self, before: float) -> None:
        with self.metric_lock:
            while self.invocations and self.invocations[0][0] < before:
                self.invocations.popleft()

    def stop(self, grace: float = 5.0) -> None:
        stoppers = [threading.Thread(target=b.stop, args=(grace,), daemon=True) for b in self.instances]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        if self.model_copy is not None:
            shutil.rmtree(self.model_copy, ignore_errors=True)
            self.model_copy = None


class Endpoint:
    def __init__(self, context: Context, name: str, arn: str, config_name: str,
                 data_capture: Callable[[str], dict | None]) -> None:
        self.context = context
        self.data_capture = data_capture  # an endpoint config's DataCaptureConfig (Hosting.data_capture)
        self.name, self.arn = name, arn
        self.config_name = config_name
        self.status = "Creating"
        self.failure_reason: str | None = None
        self.creation_time = self.last_modified = now()
        self.variants: list[Variant] = []
        self.pending_config: str | None = None
        self.pending_since: dt.datetime | None = None
        self.deployment_config: dict | None = None
        self.lock = threading.Lock()
        self.done = threading.Event()

    @property
    def backends(self) -> list[Backend]:
        """Every server process that serves this endpoint now."""
        return [b for v in self.variants for b in v.instances]

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def describe(self) -> dict:
        with self.context.lock:
            d: dict[str, Any] = {"EndpointName": self.name, "EndpointArn": self.arn,
                                 "EndpointConfigName": self.config_name, "EndpointStatus": self.status,
                                 "CreationTime": self.creation_time, "LastModifiedTime": self.last_modified}
            if self.variants:
                d["ProductionVariants"] = [{
                    "VariantName": v.name,
                    "DeployedImages": [{"SpecifiedImage": v.image, "ResolvedImage": v.image,
                                        "ResolutionTime": self.last_modified}],
                    "CurrentWeight": v.weight, "DesiredWeight": v.weight,
                    "CurrentInstanceCount": len(v.in_service()), "DesiredInstanceCount": v.desired,
                    **({"RoutingConfig": {"RoutingStrategy": v.routing}} if v.routing != "RANDOM" else {}),
                } for v in self.variants]
            capture = self.data_capture(self.config_name)
            if capture:
                d["DataCaptureConfig"] = {
                    "EnableCapture": capture.get("EnableCapture", True),
                    "CaptureStatus": "Started" if capture.get("EnableCapture", True) else "Stopped",
                    "CurrentSamplingPercentage": capture["InitialSamplingPercentage"],
                    "DestinationS3Uri": capture["DestinationS3Uri"],
                    "KmsKeyId": capture.get("KmsKeyId", "")}  # no key given: S3's default encryption
            if self.failure_reason:
                d["FailureReason"] = self.failure_reason
            if self.pending_config:
                d["PendingDeploymentSummary"] = {"EndpointConfigName": self.pending_config,
                                                 "StartTime": self.pending_since}
            if self.deployment_config:
                d["LastDeploymentConfig"] = copy.deepcopy(self.deployment_config)
            return d

    def pick(self, target_variant: str | None) -> Backend | None:
        """A variant by weight (or the one asked for), then one of its instances by its routing strategy."""
        variants = [v for v in self.variants if v.in_service()]
        if target_variant:
            variants = [v for v in variants if v.name == target_variant]
        if not variants:
            return None
        weights = [max(v.weight, 0.0) for v in variants]
        variant = random.choices(variants, weights=weights)[0] if sum(weights) > 0 else variants[0]
        return variant.choose()


class Hosting:
    """The hosting half of the stand-in (models, endpoint configs, endpoints), persisted in <work>/hosting."""

    def __init__(self, context: Context, registry: ScalingRegistry) -> None:
        self.context = context
        self.registry = registry  # the variants' scaling targets and policies: saved and restored with the endpoints
        self.models: dict[str, dict] = {}
        self.configs: dict[str, dict] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.dir = context.work_dir / "hosting"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.dir / "state.json"
        self._save_lock = threading.Lock()

    # --- persistence: endpoints outlive the process that created them, as in the cloud ---------------------
    def save(self) -> None:
        """state.json: models, configs and endpoints, each variant's desired and in-service instance counts
        (`imgclf load` reads them while it runs), and the scaling targets and policies the stand-in applies."""
        from local.sagemaker.api import to_json

        with self.context.lock:
            state = {"models": self.models, "configs": self.configs,
                     "endpoints": {n: {"arn": e.arn, "config": e.config_name, "status": e.status,
                                       "created": e.creation_time,
                                       "variants": {v.name: {"desired": v.desired, "current": len(v.in_service())}
                                                    for v in e.variants}}
                                   for n, e in self.endpoints.items() if e.status not in ("Failed", "Deleting")},
                     "scaling": self.registry.state()}
            text = json.dumps(to_json(state), indent=2)
        with self._save_lock:  # scaling threads save too: one writer of the temporary file at a time
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.state_file)

    def restore(self) -> list[str]:
        """Bring back the models, configs and in-service endpoints of an earlier run (their servers restart, as
        many per variant as it had), and the scaling targets and policies registered for them."""
        import datetime as dt

        if not self.state_file.is_file():
            return []
        state = json.loads(self.state_file.read_text())

        def times(d: dict) -> dict:
            return {k: dt.datetime.fromisoformat(v) if k == "CreationTime" and isinstance(v, str) else v
                    for k, v in d.items()}

        self.models = {k: times(v) for k, v in state.get("models", {}).items()}
        self.configs = {k: times(v) for k, v in state.get("configs", {}).items()}
        self.registry.load(state.get("scaling", {}))
        restored = []
        for name, e in state.get("endpoints", {}).items():
            if e["config"] not in self.configs:
                continue
            endpoint = Endpoint(self.context, name, e["arn"], e["config"], self.data_capture)
            endpoint.creation_time = dt.datetime.fromisoformat(e["created"])
            endpoint.status = "SystemUpdating"  # "undergoing maintenance": its servers are coming back
            self.endpoints[name] = endpoint
            counts = {v: int(c["desired"]) for v, c in e.get("variants", {}).items()}
            variants = self._start_variants(endpoint, e["config"], counts)
            if variants is None:
                endpoint.status = "Failed"
            else:
                with self.context.lock:
                    endpoint.variants, endpoint.status, endpoint.last_modified = variants, "InService", now()
                restored.append(name)
            endpoint.done.set()
        return restored

    # --- models and configs ----------------------------------------------------------------------------------
    def data_capture(self, config_name: str) -> dict | None:
        """An endpoint config's DataCaptureConfig (DescribeEndpoint shows it; the runtime captures by it)."""
        return self.configs.get(config_name, {}).get("DataCaptureConfig")

    def model_data_path(self, model: dict) -> Path:
        container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
        url = container.get("ModelDataUrl")
        if not url:
            raise ValueError(f"model {model['ModelName']} has no ModelDataUrl (only model.tar.gz models run locally)")
        # Downloaded with the model's execution role; SageMaker's words for a failed download.
        return self.context.s3.read(url, model.get("ExecutionRoleArn"), MODEL_DOWNLOAD.format(url=url))

    # --- endpoints -------------------------------------------------------------------------------------------
    def _start_variants(self, endpoint: Endpoint, config_name: str,
                        counts: dict[str, int] | None = None) -> list[Variant] | None:
        """Start each variant's instances (InitialInstanceCount, or `counts` by variant name), all at once; None
        (and FailureReason set) if any does not come up."""
        config = self.configs[config_name]
        variants: list[Variant] = []
        try:
            for spec in config["ProductionVariants"]:
                model = self.models.get(spec["ModelName"])
                if model is None:
                    raise RuntimeError(f"Could not find model \"{spec['ModelName']}\".")
                container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
                variant = Variant(spec["VariantName"], spec["ModelName"], float(spec.get("InitialVariantWeight", 1.0)),
                                  container.get("Image", ""), self.model_data_path(model),
                                  container.get("Environment", {}),
                                  desired=int((counts or {}).get(spec["VariantName"],
                                                                 spec.get("InitialInstanceCount", 1))),
                                  routing=spec.get("RoutingConfig", {}).get("RoutingStrategy", "RANDOM"))
                variants.append(variant)
                self._add_instances(endpoint, variant, variant.desired)
            return variants
        except Exception as exc:  # becomes the endpoint's FailureReason
            for variant in variants:
                variant.stop(1.0)
            with self.context.lock:
                endpoint.failure_reason = str(exc)[:1024]
            return None

    def _add_instances(self, endpoint: Endpoint, variant: Variant, count: int) -> None:
        """Start `count` more servers for `variant` at once; each joins the variant (and takes requests) when it
        passes /ping. The first failure is raised once all have finished; the ones that came up stay."""
        errors: list[Exception] = []

        def one() -> None:
            backend = Backend(variant.name, variant)
            try:
                self._launch(endpoint, backend)
            except Exception as exc:
                errors.append(exc)
                return
            with self.context.lock:
                variant.instances.append(backend)
            self._watch(endpoint, backend)

        starters = [threading.Thread(target=one, name=f"start-{endpoint.name}-{variant.name}", daemon=True)
                    for _ in range(count)]
        for t in starters:
            t.start()
        for t in starters:
            t.join()
        if errors:
            raise errors[0]

    def _launch(self, endpoint: Endpoint, backend: Backend) -> None:
        variant = backend.group
        model_path = variant.model_path
        if not model_path.exists():
            raise RuntimeError(f"Failed to download model data from {self.context.s3.uri_for(model_path)}: no such "
                               "object in the local S3 root")
        with variant.extracting:  # extracted once per variant: its instances and their replacements share the files
            if variant.model_copy is None:
                try:
                    _, variant.model_copy = resolve_model(model_path)
                except ModelSourceError as exc:
                    raise RuntimeError(f"Failed to extract model data from {self.context.s3.uri_for(model_path)}: "
                                       f"{exc}") from None
        model_dir = variant.model_copy or model_path
        backend.port = None
        log_dir = self.context.work_dir / "endpoints" / endpoint.name
        log_dir.mkdir(parents=True, exist_ok=True)
        backend.log_path = log_dir / f"{backend.variant}-{int(time.time() * 1000)}-{uuid.uuid4().hex[:6]}.log"
        env = processes.child_env(variant.environment, {
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(self.context.repo_root), os.environ.get("PYTHONPATH")) if p)})
        cmd = [self.context.python, "-m", "local.endpoint_server", "--model-dir", str(model_dir), "--port", "0",
               "--endpoint-name", endpoint.name, "--parent-pid", str(os.getpid())]
        log = backend.log_path.open("w")
        proc = processes.spawn(cmd, owner=self.context, cwd=str(self.context.repo_root), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        backend.proc = proc
        backend.stopping = False
        found = threading.Event()
        stdout = proc.stdout
        assert stdout is not None  # stdout=PIPE

        def pump() -> None:
            with log:
                for raw in iter(stdout.readline, b""):
                    line = raw.decode("utf-8", "replace")
                    log.write(line)
                    log.flush()
                    if backend.port is None and (m := LISTENING.search(line)):
                        backend.port = int(m.group(2))
                        found.set()
            found.set()

        threading.Thread(target=pump, name=f"endpoint-{endpoint.name}-{backend.variant}", daemon=True).start()
        deadline = time.monotonic() + self.context.endpoint_startup_timeout
        found.wait(self.context.endpoint_startup_timeout)
        while time.monotonic() < deadline and not self.context.closed:
            if backend.proc.poll() is not None:
                break
            if backend.port is not None and _ping(backend.url):
                backend.ready.set()
                return
            time.sleep(0.2)
        backend.stop(1.0)
        time.sleep(0.1)
        tail = backend.log_path.read_text(errors="replace").strip().splitlines()[-6:]
        why = "exited" if backend.proc.poll() is not None else \
            f"did not pass the /ping health check within {self.context.endpoint_startup_timeout:g}s"
        raise RuntimeError(f"The primary container for production variant {backend.variant} {why}. "
                           + " | ".join(tail))

    def _watch(self, endpoint: Endpoint, backend: Backend) -> None:
        threading.Thread(target=self._replace_if_it_dies, args=(endpoint, backend, backend.proc),
                         name=f"watch-{endpoint.name}-{backend.variant}", daemon=True).start()

    def _replace_if_it_dies(self, endpoint: Endpoint, backend: Backend, proc: subprocess.Popen) -> None:
        """SageMaker replaces an instance whose container dies; so does the stand-in. The endpoint stays InService
        on its other instances (with none, requests get 503 meanwhile); a replacement that does not come up leaves
        it Failed, with the reason."""
        proc.wait()
        if backend.stopping or self.context.closed:
            return
        backend.ready.clear()
        with self.context.lock:
            serving = backend in endpoint.backends
        if not serving:
            return
        backend.restarts += 1
        if backend.log_path is not None:
            with backend.log_path.open("a") as log:
                log.write(f"the server exited with status {proc.returncode}: replacing it\n")
        try:
            if backend.restarts > MAX_REPLACEMENTS:
                raise RuntimeError(f"The primary container for production variant {backend.variant} exited "
                                   f"{backend.restarts} times.")
            self._launch(endpoint, backend)
            self._watch(endpoint, backend)
        except Exception as exc:
            backend.stop(1.0)
            with self.context.lock:
                if backend not in endpoint.backends:
                    return
                variant = backend.group
                failed = not any(b is not backend and b.ready.is_set() for b in variant.instances)
                if failed:
                    endpoint.status = "Failed"
                else:
                    variant.instances.remove(backend)  # its siblings serve: one instance fewer than desired
                endpoint.failure_reason = str(exc)[:1024]
                endpoint.last_modified = now()
            if failed:
                variant.stop(1.0)  # nothing of it serves: its extracted model goes now
            self._emit(endpoint)
            self.save()

    def create(self, endpoint: Endpoint) -> None:
        def run() -> None:
            variants = self._start_variants(endpoint, endpoint.config_name)
            with self.context.lock:
                if variants is None:
                    endpoint.status = "Failed"
                else:
                    endpoint.variants, endpoint.status = variants, "InService"
                endpoint.last_modified = now()
            self._emit(endpoint)
            self.save()
            endpoint.done.set()

        self._emit(endpoint)
        threading.Thread(target=run, name=f"create-endpoint-{endpoint.name}", daemon=True).start()

    def update(self, endpoint: Endpoint, config_name: str, deployment_config: dict | None,
               retained: Collection[str] = ()) -> None:
        """Blue/green: the new config's fleet starts beside the old one, traffic switches once all of it is up, the
        old fleet finishes its requests and stops. `retained`: the VariantPropertyType values whose live value a
        variant of the same name keeps (RetainAllVariantProperties less ExcludeRetainedVariantProperties:
        DesiredInstanceCount instead of InitialInstanceCount, DesiredWeight instead of InitialVariantWeight;
        https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_VariantProperty.html)."""
        with self.context.lock:
            counts = {v.name: v.desired for v in endpoint.variants} if "DesiredInstanceCount" in retained else None
            weights = {v.name: v.weight for v in endpoint.variants} if "DesiredWeight" in retained else {}

        def run() -> None:
            variants = self._start_variants(endpoint, config_name, counts)
            for variant in variants or ():
                variant.weight = weights.get(variant.name, variant.weight)
            with self.context.lock:
                old = endpoint.variants
                if variants is not None:
                    endpoint.variants, endpoint.config_name = variants, config_name  # the switch: atomic for routing
                    endpoint.failure_reason = None
                else:
                    old = []
                    endpoint.failure_reason = f"Update failed; rolled back to {endpoint.config_name}: " \
                                              f"{endpoint.failure_reason or ''}"[:1024]
                endpoint.status, endpoint.pending_config, endpoint.pending_since = "InService", None, None
                endpoint.deployment_config = deployment_config
                endpoint.last_modified = now()
            wait = (deployment_config or {}).get("BlueGreenUpdatePolicy", {}).get("TerminationWaitInSeconds", 0)
            if old and wait:
                time.sleep(min(float(wait), 30.0))  # SageMaker keeps the blue fleet this long after the switch
            for variant in old:
                for backend in variant.instances:
                    backend.drain(INVOKE_TIMEOUT)
                variant.stop(self.context.stop_grace_seconds)
            self._emit(endpoint)
            self.save()
            endpoint.done.set()

        endpoint.done.clear()
        with self.context.lock:
            endpoint.status, endpoint.pending_config, endpoint.pending_since = "Updating", config_name, now()
            endpoint.last_modified = now()
        self._emit(endpoint)
        threading.Thread(target=run, name=f"update-endpoint-{endpoint.name}", daemon=True).start()

    def set_capacity(self, endpoint: Endpoint, desired: dict[str, dict]) -> None:
        """UpdateEndpointWeightsAndCapacities (what Application Auto Scaling calls): weights change at once; an
        instance count is reached by starting servers (each takes requests once it passes /ping) or by retiring
        them: a retired server takes no new request, finishes the ones it has, then stops. The endpoint is
        Updating meanwhile and InService after (the caller set Updating under the lock)."""
        def run() -> None:
            reasons = []
            for name, change in desired.items():
                variant = endpoint.variant(name)
                if variant is None:
                    continue
                if "DesiredWeight" in change:
                    with self.context.lock:
                        variant.weight = float(change["DesiredWeight"])
                if "DesiredInstanceCount" not in change:
                    continue
                target = int(change["DesiredInstanceCount"])
                with self.context.lock:
                    current = len(variant.instances)
                if target > current:
                    try:
                        self._add_instances(endpoint, variant, target - current)
                    except Exception as exc:  # the ones that came up serve; the count says how many
                        with self.context.lock:
                            variant.desired = len(variant.instances)
                        reasons.append(f"Failed to scale variant {name} to {target} instances: {exc}")
                elif target < current:
                    self._retire(endpoint, variant, current - target)
            with self.context.lock:
                endpoint.status = "InService"
                endpoint.failure_reason = "; ".join(reasons)[:1024] or None
                endpoint.last_modified = now()
            self._emit(endpoint)
            self.save()
            endpoint.done.set()

        with self.context.lock:  # DescribeEndpoint shows the new DesiredInstanceCount from the call on
            for name, change in desired.items():
                variant = endpoint.variant(name)
                if variant is not None and "DesiredInstanceCount" in change:
                    variant.desired = int(change["DesiredInstanceCount"])
        endpoint.done.clear()
        self._emit(endpoint)
        self.save()
        threading.Thread(target=run, name=f"scale-endpoint-{endpoint.name}", daemon=True).start()

    def _retire(self, endpoint: Endpoint, variant: Variant, count: int) -> None:
        """Scale-in without dropping a request: out of routing first (under the lock the proxy picks under), then
        drained, then stopped. The least busy, newest instances go first."""
        with self.context.lock:
            ranked = sorted(variant.instances, key=lambda b: (b.inflight, -b.started))
            leaving = ranked[:count]
            variant.instances = [b for b in variant.instances if b not in leaving]
        for backend in leaving:
            backend.drain(INVOKE_TIMEOUT)
            backend.stop(self.context.stop_grace_seconds)

    def delete(self, endpoint: Endpoint) -> None:
        with self.context.lock:
            endpoint.status = "Deleting"
            variants, endpoint.variants = endpoint.variants, []
        self._emit(endpoint)
        for variant in variants:
            variant.stop(self.context.stop_grace_seconds)
        self.registry.forget_endpoint(endpoint.name)  # its scalable targets go with it
        with self.context.lock:
            self.endpoints.pop(endpoint.name, None)
        self.save()

    def shutdown(self) -> None:
        for endpoint in list(self.endpoints.values()):
            for variant in list(endpoint.variants):
                variant.stop(1.0)

    def _emit(self, endpoint: Endpoint) -> None:
        d = endpoint.describe()
        self.context.emit({"type": "Endpoint", "EndpointName": endpoint.name, "EndpointStatus": d["EndpointStatus"],
                           "EndpointConfigName": d["EndpointConfigName"],
                           **({"FailureReason": d["FailureReason"]} if "FailureReason" in d else {})})


def _ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


# --- the stable sagemaker-runtime URL ------------------------------------------------------------------------
class RuntimeProxy:
    """http://127.0.0.1:<port>: InvokeEndpoint for every local endpoint, routed to its current server."""

    def __init__(self, context: Context, hosting: Hosting, port: int = 0) -> None:
        self.context, self.hosting = context, hosting
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = REQUEST_TIMEOUT_S  # a silent kept-alive client frees its thread (socket timeout per read)

            def log_message(self, *args: Any) -> None:  # requests are not the stand-in's log
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, code: str, message: str) -> None:
                self._reply(status, json.dumps({"message": message}).encode(),
                            {"Content-Type": "application/json", "x-amzn-ErrorType": code,
                             "x-amzn-RequestId": os.urandom(16).hex()})

            def do_GET(self) -> None:  # http.server's naming
                if self.path == "/ping":
                    self._reply(200, b"", {})
                else:
                    self._error(404, "UnknownOperationException", f"no route for GET {self.path}")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if 0 < length <= MAX_BODY else b""
                if length > MAX_BODY:
                    self.close_connection = True
                    self._error(413, "ValidationError", f"Request payload exceeds {MAX_BODY} bytes")
                    return
                match = INVOKE_PATH.match(self.path.split("?")[0])
                if not match:
                    self._error(404, "UnknownOperationException", f"no route for POST {self.path}")
                    return
                proxy.invoke(self, urllib.parse.unquote(match.group(1)), body)

        self._capture_lock = threading.Lock()
        self.session = f"{now():%M-%S-%f}"[:-3] + f"-{uuid.uuid4()}"  # one capture file per process and hour
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="sagemaker-runtime", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def invoke(self, handler: Any, name: str, body: bytes) -> None:
        endpoint = self.hosting.endpoints.get(name)
        # The blue/green switch holds this lock too: a request is counted on the fleet it picked.
        with self.context.lock:
            backend = endpoint.pick(handler.headers.get("X-Amzn-SageMaker-Target-Variant")) if endpoint else None
            status = endpoint.status if endpoint else None
            if backend is not None:
                backend.enter()
        if endpoint is None or status in ("Creating", "Failed", "Deleting"):
            if backend is not None:
                backend.leave()
            handler._error(400, "ValidationError", f"Endpoint {name} of account {self.context.account} not found.")
            return
        if backend is None:
            handler._error(400, "ValidationError", f"Endpoint {name} has no variant in service")
            return
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() in ("content-type", "accept", "x-amzn-sagemaker-custom-attributes")}
        try:
            conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=INVOKE_TIMEOUT)
            conn.request("POST", f"/endpoints/{urllib.parse.quote(name)}/invocations", body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            out = {k: v for k, v in response.getheaders()
                   if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date")}
            conn.close()
        except TimeoutError:
            handler._error(424, "ModelError", "Your invocation timed out while waiting for a response from "
                                              f"container {backend.variant}.")
            return
        except OSError as exc:
            handler._error(503, "ServiceUnavailable", f"variant {backend.variant} is not reachable: {exc}")
            return
        finally:
            backend.leave()
        out = {k: v for k, v in out.items() if k.lower() != "x-amzn-invoked-production-variant"}
        out["x-Amzn-Invoked-Production-Variant"] = backend.variant
        handler._reply(response.status, payload, out)
        if response.status == 200:
            content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
            self.capture(endpoint, backend, content_type, body, out.get("Content-Type", ""), payload)

    def capture(self, endpoint: Endpoint, backend: Backend, content_type: str | None, body: bytes,
                output_type: str, payload: bytes) -> None:
        """Data capture as SageMaker writes it: JSON lines under <destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/."""
        with self.context.lock:
            config = self.hosting.data_capture(endpoint.config_name)
        if not config or not config.get("EnableCapture", True):
            return
        if random.uniform(0, 100) >= config["InitialSamplingPercentage"]:
            return
        header = config.get("CaptureContentTypeHeader", {})

        def encode(data: bytes, observed: str | None, mode: str) -> dict:
            media = (observed or "").split(";")[0].strip().lower()
            if media in [t.lower() for t in header.get("JsonContentTypes", [])]:
                encoding, text = "JSON", data.decode("utf-8", "replace")
            elif media in [t.lower() for t in header.get("CsvContentTypes", [])]:
                encoding, text = "CSV", data.decode("utf-8", "replace")
            else:
                encoding, text = "BASE64", base64.b64encode(data).decode()
            return {"observedContentType": observed or "", "mode": mode, "data": text, "encoding": encoding}

        modes = {o["CaptureMode"] for o in config["CaptureOptions"]}
        record: dict[str, Any] = {"captureData": {}, "eventMetadata": {
            "eventId": str(uuid.uuid4()), "inferenceTime": now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"},
            "eventVersion": "0"}
        if "Input" in modes:
            record["captureData"]["endpointInput"] = encode(body, content_type, "INPUT")
        if "Output" in modes:
            record["captureData"]["endpointOutput"] = encode(payload, output_type, "OUTPUT")
        stamp = now()
        uri = self.context.s3.join(config["DestinationS3Uri"], endpoint.name, backend.variant,
                              stamp.strftime("%Y/%m/%d/%H"), f"{self.session}.jsonl")
        with self.context.lock:
            role = self.hosting.models.get(backend.model_name, {}).get("ExecutionRoleArn")
        try:  # written with the model's execution role
            path = self.context.s3.write(uri, role, "data capture")
        except S3Denied:  # SageMaker drops the capture; the invocation itself has been answered
            return
        with self._capture_lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as sink:
                sink.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
