"""Reading a recorded run: a local run as recorded AWS responses (cli/recording/writer.py writes them), answered to
the CLI and the report as boto3 clients answer.

Layout under the run's folder DIR (the demo's --out, default demo-output/):

    DIR/api/<service>/<method>/<identifier>.json   one response per call, e.g.
        api/stepfunctions/describe_execution/<execution name>.json
        api/stepfunctions/get_execution_history/<execution name>.json      (every page, merged)
        api/stepfunctions/list_executions/<state machine name>.json        (every page, merged; newest first)
        api/sagemaker/describe_hyper_parameter_tuning_job/<tuning job>.json
        api/sagemaker/list_training_jobs_for_hyper_parameter_tuning_job/<tuning job>.json  (merged)
        api/sagemaker/describe_training_job/<training job>.json           (every trial and the final job)
        api/sagemaker/describe_endpoint/<endpoint>.json, describe_endpoint_config/<config>.json,
            describe_model/<model>.json
        api/cloudformation/describe_stacks/<stack name>.json
        api/cloudwatch/get_metric_data/<training job>.json                 (when a CloudWatch client was given)
    DIR/api/<service>/<method>.json                  calls without an identifying argument, e.g.
        api/sagemaker/list_endpoints.json, list_endpoint_configs.json, list_models.json   (merged)
    DIR/s3/<bucket>/<key>                            the run's S3 objects (output.tar.gz, model.tar.gz, data)

Responses are the clients' own dicts, JSON-safe (datetimes as ISO 8601 strings, no ResponseMetadata); each one
validates against botocore's output shape of its operation. RecordedClient answers the same method calls from
these files (timestamps revived, pagination and filters applied, AWS's error codes for what is missing), and
RecordedS3 serves DIR/s3 with S3's methods.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.validate import validate_parameters

import stackfacts as facts
from awsshapes import operation_model, output_problems, paginator_config, region_of_arn, revive
from cli.errors import CliError

log = logging.getLogger(__name__)

API_DIR, S3_DIR = "api", "s3"
DEFAULT_PAGE_SIZE = {"sagemaker": 10, "stepfunctions": 100}  # what AWS returns without MaxResults


@dataclass(frozen=True)
class Op:
    """How one recorded operation is filed and answered."""

    key_param: str | None = None  # the request member that names the file (None: one file for the operation)
    missing: tuple[str, str] | None = None  # (AWS error code, message with {id}) when the file is absent
    key_of: Callable[[str], str] = lambda value: value  # request value -> identifier (an ARN -> its name)
    filters: dict[str, tuple[str, str]] = field(default_factory=dict)  # member -> (item member, "contains"|"equals")
    sorts: dict[str, str] = field(default_factory=dict)  # SortBy value -> the item member (a.b for nested) it sorts


def arn_name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


OPS: dict[tuple[str, str], Op] = {
    ("stepfunctions", "describe_execution"): Op(
        "executionArn", ("ExecutionDoesNotExist", "Execution Does Not Exist: '{value}'"), arn_name),
    ("stepfunctions", "get_execution_history"): Op(
        "executionArn", ("ExecutionDoesNotExist", "Execution Does Not Exist: '{value}'"), arn_name),
    ("stepfunctions", "list_executions"): Op(
        "stateMachineArn", ("StateMachineDoesNotExist", "State Machine Does Not Exist: '{value}'"), arn_name,
        {"statusFilter": ("status", "equals")}),
    ("sagemaker", "describe_hyper_parameter_tuning_job"): Op(
        "HyperParameterTuningJobName", ("ResourceNotFound", "Amazon SageMaker can't find a tuning job with name "
                                        "{value}")),
    ("sagemaker", "list_training_jobs_for_hyper_parameter_tuning_job"): Op(
        "HyperParameterTuningJobName", ("ResourceNotFound", "Amazon SageMaker can't find a tuning job with name "
                                        "{value}"), filters={"StatusEquals": ("TrainingJobStatus", "equals")},
        sorts={"Name": "TrainingJobName", "CreationTime": "CreationTime", "Status": "TrainingJobStatus",
               "FinalObjectiveMetricValue": "FinalHyperParameterTuningJobObjectiveMetric.Value"}),
    ("sagemaker", "describe_training_job"): Op("TrainingJobName", ("ValidationException",
                                                                   "Requested resource not found.")),
    ("sagemaker", "describe_endpoint"): Op("EndpointName", ("ValidationException",
                                                            "Could not find endpoint \"{value}\".")),
    ("sagemaker", "describe_endpoint_config"): Op("EndpointConfigName", (
        "ValidationException", "Could not find endpoint configuration \"{value}\".")),
    ("sagemaker", "describe_model"): Op("ModelName", ("ValidationException", "Could not find model \"{value}\".")),
    ("sagemaker", "list_endpoints"): Op(filters={"NameContains": ("EndpointName", "contains"),
                                                 "StatusEquals": ("EndpointStatus", "equals")}),
    ("sagemaker", "list_endpoint_configs"): Op(filters={"NameContains": ("EndpointConfigName", "contains")}),
    ("sagemaker", "list_models"): Op(filters={"NameContains": ("ModelName", "contains")}),
    ("cloudformation", "describe_stacks"): Op("StackName", ("ValidationError", "Stack with id {value} does not "
                                                                               "exist")),
    ("cloudwatch", "get_metric_data"): Op(),  # filed per training job; answered query by query
}

# Deleting through a recorded client removes the resource from the recording (teardown --local).
DELETES: dict[str, tuple[str, str, str]] = {  # method -> (describe method, list method, list item name member)
    "delete_endpoint": ("describe_endpoint", "list_endpoints", "EndpointName"),
    "delete_endpoint_config": ("describe_endpoint_config", "list_endpoint_configs", "EndpointConfigName"),
    "delete_model": ("describe_model", "list_models", "ModelName"),
}


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(value: str) -> str:
    name = _UNSAFE.sub("_", value)
    return name if name.strip(".") else "_"


def record_path(root: Path, service: str, method: str, identifier: str | None = None) -> Path:
    base = Path(root) / API_DIR / service
    return base / f"{method}.json" if identifier is None else base / method / f"{safe_name(identifier)}.json"


def client_error(code: str, message: str, operation: str, status: int = 400) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": message},
                     "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "recorded"}}
    return ClientError(response, operation)


def _metadata() -> dict:
    return {"ResponseMetadata": {"HTTPStatusCode": 200, "RequestId": "recorded", "HTTPHeaders": {},
                                 "RetryAttempts": 0}}


class RecordingError(CliError):
    """A recording file that is damaged, tampered with or points outside its run folder (one line naming it)."""


def confined(root: Path, *parts: str) -> Path:
    """root/parts, refused when recorded data would lead outside root: an absolute part ('/etc/passwd' as an S3
    key), '..', or a symbolic link out of the folder."""
    base = Path(root).resolve()
    path = base.joinpath(*parts)
    if any(Path(part).is_absolute() for part in parts) or not path.resolve().is_relative_to(base):
        raise ValueError(f"{'/'.join(parts)!r} leads outside {root}")
    return path


def read_response(path: Path) -> Any:
    """A recorded response: JSON whose top level is an object, or a RecordingError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _short(exc)
        raise RecordingError(f"{path}: not a readable recorded response ({reason})") from None
    if not isinstance(data, dict):
        raise RecordingError(f"{path}: not a recorded response (a JSON object), but {type(data).__name__}")
    return data


def _short(exc: BaseException | str, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RecordedClient:
    """A boto3 client of one service that answers from a recording (read-only, except deletes)."""

    def __init__(self, root: str | Path, service: str) -> None:
        self.root, self.service = Path(root), service

    def __getattr__(self, method: str) -> Callable[..., dict]:
        if (self.service, method) in OPS:
            return lambda **params: self._call(method, params)
        if self.service == "sagemaker" and method in DELETES:
            return lambda **params: self._delete(method, params)
        raise AttributeError(f"a recorded local run cannot answer {self.service}.{method}")

    def _operation(self, method: str) -> str:
        return operation_model(self.service, method).name

    def _call(self, method: str, params: dict) -> dict:
        model = operation_model(self.service, method)
        if model.input_shape is not None:
            validate_parameters(params, model.input_shape)  # ParamValidationError, as boto3 raises it
        op = OPS[(self.service, method)]
        if (self.service, method) == ("cloudwatch", "get_metric_data"):
            return self._metric_data(params)
        if (self.service, method) == ("cloudformation", "describe_stacks") and "StackName" not in params:
            stacks = [s for p in sorted((self.root / API_DIR / "cloudformation" / method).glob("*.json"))
                      for s in read_response(p).get("Stacks", [])]
            return {**revive({"Stacks": stacks}, model.output_shape), **_metadata()}
        value = params.get(op.key_param) if op.key_param else None
        identifier = op.key_of(value) if value is not None else None
        if (self.service, method) == ("cloudformation", "describe_stacks") and identifier and "/" in identifier:
            identifier = identifier.split("/")[1]  # a stack id: arn:...:stack/<name>/<uuid>
        path = record_path(self.root, self.service, method, identifier)
        if not path.is_file():
            if op.missing is None:  # a list nobody recorded is an empty list
                return {**{k: [] for k in self._result_keys(method)}, **_metadata()}
            code, message = op.missing
            raise client_error(code, message.format(value=value), model.name)
        response = self._checked(path, method)
        if method == "get_execution_history" and params.get("reverseOrder"):
            response["events"] = list(reversed(response.get("events", [])))
        response = self._page(method, response, params, op)
        return {**revive(response, model.output_shape), **_metadata()}

    def _checked(self, path: Path, method: str) -> dict:
        """A recorded response that fits its operation's output shape (tampered or truncated: one line naming the
        file, before a reader trips over a missing member)."""
        response = read_response(path)
        if problems := output_problems(self.service, method, response):
            raise RecordingError(f"{path}: does not fit {self.service}.{method}'s response shape: "
                                 f"{_short(problems[0])}")
        return response

    def _result_keys(self, method: str) -> list[str]:
        keys = (paginator_config(self.service, method) or {}).get("result_key", [])
        return [keys] if isinstance(keys, str) else list(keys)

    def _page(self, method: str, response: dict, params: dict, op: Op) -> dict:
        config_ = paginator_config(self.service, method)
        keys = self._result_keys(method)
        if not config_ or not keys:
            return response
        items: list = response.get(keys[0], [])
        for member, (item_member, how) in op.filters.items():
            if params.get(member) is not None:
                wanted = str(params[member])
                items = [i for i in items if (wanted.lower() in str(i.get(item_member, "")).lower()
                                              if how == "contains" else str(i.get(item_member)) == wanted)]
        if op.sorts and params.get("SortBy") in op.sorts:
            items = _sorted(items, op.sorts[params["SortBy"]], params.get("SortOrder") == "Descending")
        token = params.get(config_["input_token"])
        try:
            start = int(token) if token else 0
        except ValueError:
            raise client_error("ValidationException" if self.service == "sagemaker" else "InvalidToken",
                                f"Invalid pagination token {token!r}", self._operation(method)) from None
        size = params.get(config_.get("limit_key", "")) or DEFAULT_PAGE_SIZE.get(self.service) or len(items) or 1
        page = {**response, keys[0]: items[start:start + size]}
        if start + size < len(items):
            page[config_["output_token"]] = str(start + size)
        return page

    def _metric_data(self, params: dict) -> dict:
        results = []
        for query in params["MetricDataQueries"]:
            metric = (query.get("MetricStat") or {}).get("Metric") or {}
            job = next((d["Value"] for d in metric.get("Dimensions", [])
                        if d.get("Name") == facts.TRAINING_METRIC_DIMENSION), "")
            path = record_path(self.root, "cloudwatch", "get_metric_data", job)
            recorded = self._checked(path, "get_metric_data").get("MetricDataResults", []) \
                if job and path.is_file() else []
            match = next((r for r in recorded if r.get("Label") == metric.get("MetricName")), None)
            results.append({"Id": query["Id"], "Label": query.get("Label", metric.get("MetricName", "")),
                            "Timestamps": list(match.get("Timestamps", [])) if match else [],
                            "Values": list(match.get("Values", [])) if match else [], "StatusCode": "Complete"})
        shape = operation_model("cloudwatch", "get_metric_data").output_shape
        return {**revive({"MetricDataResults": results, "Messages": []}, shape), **_metadata()}

    def _delete(self, method: str, params: dict) -> dict:
        describe, list_method, member = DELETES[method]
        if (shape := operation_model(self.service, method).input_shape) is not None:
            validate_parameters(params, shape)
        op = OPS[(self.service, describe)]
        name = params[op.key_param]
        path = record_path(self.root, self.service, describe, name)
        listing_path = record_path(self.root, self.service, list_method)
        listing = read_response(listing_path) if listing_path.is_file() else {}
        key = self._result_keys(list_method)[0]
        items = listing.get(key, [])
        if not path.is_file() and not any(i.get(member) == name for i in items):
            code, message = op.missing or ("ValidationException", "not found")
            raise client_error(code, message.format(value=name), self._operation(method))
        path.unlink(missing_ok=True)
        if listing:
            listing[key] = [i for i in items if i.get(member) != name]
            listing_path.write_text(json.dumps(listing, indent=1))
        return _metadata()


def _sorted(items: list[dict], member: str, descending: bool) -> list[dict]:
    """Items by a (dotted) member; items without it go last in either order, as SageMaker lists them."""
    def value(item: Any) -> Any:
        for part in member.split("."):
            item = item.get(part) if isinstance(item, dict) else None
        return item

    present = [i for i in items if value(i) is not None]
    return sorted(present, key=value, reverse=descending) + [i for i in items if value(i) is None]


class RecordedS3:
    """S3's object calls over a folder: s3://<bucket>/<key> is <root>/<bucket>/<key>."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, bucket: str, key: str, operation: str) -> Path:
        try:
            if not bucket or "/" in bucket or bucket in (".", ".."):
                raise ValueError(bucket)
            return confined(confined(self.root, bucket), *key.split("/"))
        except ValueError:
            raise client_error("InvalidArgument", f"invalid bucket or key: {bucket}/{key}", operation) from None

    def _bucket(self, bucket: str, operation: str) -> Path:
        path = self._path(bucket, "", operation)
        if not path.is_dir():
            raise client_error("NoSuchBucket", "The specified bucket does not exist", operation, 404)
        return path

    @staticmethod
    def _etag(path: Path) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return f'"{digest.hexdigest()}"'

    def _object(self, Bucket: str, Key: str, operation: str) -> Path:
        self._bucket(Bucket, operation)
        path = self._path(Bucket, Key, operation)
        if not path.is_file():
            if operation == "HeadObject":
                raise client_error("404", "Not Found", operation, 404)
            raise client_error("NoSuchKey", "The specified key does not exist.", operation, 404)
        return path

    def get_object(self, Bucket: str, Key: str, **_: Any) -> dict:
        path = self._object(Bucket, Key, "GetObject")
        data = path.read_bytes()
        return {"Body": StreamingBody(io.BytesIO(data), len(data)), "ContentLength": len(data),
                "ETag": self._etag(path), "LastModified": _mtime(path), **_metadata()}

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict:
        path = self._object(Bucket, Key, "HeadObject")
        return {"ContentLength": path.stat().st_size, "ETag": self._etag(path), "LastModified": _mtime(path),
                **_metadata()}

    def list_objects_v2(self, Bucket: str, Prefix: str = "", ContinuationToken: str | None = None,
                        MaxKeys: int = 1000, **_: Any) -> dict:
        root = self._bucket(Bucket, "ListObjectsV2")
        keys = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        keys = [k for k in keys if k.startswith(Prefix) and k > (ContinuationToken or "")]
        page, more = keys[:MaxKeys], len(keys) > MaxKeys
        contents = [{"Key": k, "Size": (root / k).stat().st_size, "ETag": self._etag(root / k),
                     "LastModified": _mtime(root / k), "StorageClass": "STANDARD"} for k in page]
        response = {"Name": Bucket, "Prefix": Prefix, "KeyCount": len(page), "MaxKeys": MaxKeys,
                    "IsTruncated": more, **({"Contents": contents} if contents else {}), **_metadata()}
        if more:
            response["NextContinuationToken"] = page[-1]
        return response

    def upload_file(self, Filename: str, Bucket: str, Key: str, ExtraArgs: dict | None = None,
                    Callback: Callable[[int], Any] | None = None, Config: Any = None) -> None:
        target = self._path(Bucket, Key, "PutObject")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        with open(Filename, "rb") as src, tmp.open("wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                dst.write(chunk)
                if Callback:
                    Callback(len(chunk))
        tmp.replace(target)

    def put_object(self, Bucket: str, Key: str, Body: bytes = b"", **_: Any) -> dict:
        target = self._path(Bucket, Key, "PutObject")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Body if isinstance(Body, bytes) else Body.read())
        return {"ETag": self._etag(target), **_metadata()}


def _mtime(path: Path) -> dt.datetime:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)


def recorded_stacks(root: Path) -> list[str]:
    folder = Path(root) / API_DIR / "cloudformation" / "describe_stacks"
    names = []
    for path in sorted(folder.glob("*.json")):
        stacks = read_response(path).get("Stacks")
        if not isinstance(stacks, list) or not all(isinstance(s, dict) and isinstance(s.get("StackName"), str)
                                                   for s in stacks):
            raise RecordingError(f"{path}: not a DescribeStacks response (Stacks[].StackName)")
        names += [s["StackName"] for s in stacks]
    return names


def recorded_region(root: Path) -> str:
    for path in sorted((Path(root) / API_DIR / "stepfunctions" / "describe_execution").glob("*.json")):
        if region := region_of_arn(str(read_response(path).get("executionArn", ""))):
            return region
    return facts.LOCAL_REGION


def validate_recording(root: str | Path) -> list[str]:
    """Every recorded response checked against botocore's output shape: a list of problems (empty: all valid)."""
    problems = []
    api = Path(root) / API_DIR
    for path in sorted(api.rglob("*.json")):
        parts = path.relative_to(api).parts
        service, method = parts[0], (parts[1] if len(parts) == 3 else Path(parts[1]).stem)
        try:
            found = output_problems(service, method, read_response(path))
        except (KeyError, ValueError, RecordingError) as exc:
            found = [f"unreadable: {exc}"]
        problems += [f"{path.relative_to(root)}: {p}" for p in found]
    return problems
