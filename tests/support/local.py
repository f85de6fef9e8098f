"""Helpers shared by the local-mode tests (no tests here): tiny datasets, SageMaker requests, a fast fake script."""

from __future__ import annotations

import contextlib
import shutil
import tarfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

import stackfacts as facts
from ml import contract
from tests.support import ROOT

BUCKET = "local-test-bucket"
OUTPUT_PREFIX = "output"  # training_request's S3OutputPath: jobs write s3://BUCKET/output/<job>/output/...
ROLE = f"arn:aws:iam::{facts.LOCAL_ACCOUNT}:role/sagemaker"
RULE_IMAGE = "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"
# Small enough for 2 shared cores: 80 training images of 16 px, resnet18, one or two epochs.
TINY_HYPERPARAMETERS = {**contract.LOCAL_HYPERPARAMETERS, "image-size": "16", contract.BATCH_SIZE: "16",
                        contract.EPOCHS: "1", "num-workers": "0"}


def tiny_dataset(source: Path, target: Path, per_class: dict[str, int] | None = None) -> Path:
    """A few images per class of each split of an ImageFolder dataset."""
    per_class = per_class or {contract.TRAIN: 8, contract.VALID: 3, contract.TEST: 3}
    for split, count in per_class.items():
        for class_dir in sorted((source / split).iterdir()):
            out = target / split / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:count]:
                shutil.copy(image, out / image.name)
    return target


def s3_data(s3_root: Path, dataset: Path, prefix: str = "data") -> str:
    """Put a dataset into the local S3 root; return its s3:// prefix."""
    shutil.copytree(dataset, s3_root / BUCKET / prefix, dirs_exist_ok=True)
    return f"s3://{BUCKET}/{prefix}"


def metric_definitions() -> list[dict]:
    return [{"Name": m.name, "Regex": m.regex} for m in contract.METRICS]


def channels(data_uri: str) -> list[dict]:
    return [{"ChannelName": c, "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{data_uri}/{c}",
                                                                 "S3DataDistributionType": "FullyReplicated"}}}
            for c in contract.CHANNELS]


def training_request(name: str, data_uri: str, *, hyperparameters: dict | None = None, max_runtime: int = 600,
                     debugger: bool = False, rules: dict[str, dict] | None = None, profiler: bool = False,
                     submit_directory: str = f"s3://{BUCKET}/code/sourcedir.tar.gz") -> dict:
    """CreateTrainingJob as the state machine sends it (script mode, the https:// output form CDK writes)."""
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1",
                                   "TrainingInputMode": "File", "MetricDefinitions": metric_definitions()},
        "RoleArn": ROLE,
        "InputDataConfig": channels(data_uri),
        "OutputDataConfig": {"S3OutputPath": f"https://s3.{facts.LOCAL_REGION}.amazonaws.com/{BUCKET}/{OUTPUT_PREFIX}"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
        "HyperParameters": {"sagemaker_program": "train.py", "sagemaker_submit_directory": submit_directory,
                            **TINY_HYPERPARAMETERS, **(hyperparameters or {})},
        "CheckpointConfig": {"S3Uri": f"s3://{BUCKET}/checkpoints/{name}"},
    }
    if debugger:
        request["DebugHookConfig"] = {"S3OutputPath": f"s3://{BUCKET}/debug", "CollectionConfigurations": [
            {"CollectionName": "losses", "CollectionParameters": {"save_interval": "1"}},
            {"CollectionName": "gradients", "CollectionParameters": {"save_interval": "2"}},
            {"CollectionName": "relu_input", "CollectionParameters": {"include_regex": ".*relu_input",
                                                                      "save_interval": "4"}}]}
        request["DebugRuleConfigurations"] = [  # name -> RuleParameters (rule_to_invoke defaults to the name)
            {"RuleConfigurationName": n, "RuleEvaluatorImage": RULE_IMAGE,
             "RuleParameters": {"rule_to_invoke": n, **params}} for n, params in (rules or {}).items()]
    if profiler:
        request["ProfilerConfig"] = {"S3OutputPath": f"s3://{BUCKET}/profiler", "ProfilingIntervalInMilliseconds": 200}
        request["ProfilerRuleConfigurations"] = [
            {"RuleConfigurationName": n, "RuleEvaluatorImage": RULE_IMAGE, "RuleParameters": {"rule_to_invoke": n}}
            for n in (facts.PROFILER_REPORT_RULE, "LowGPUUtilization")]
    return request


def sourcedir(s3_root: Path, files: dict[str, str], key: str = "code/sourcedir.tar.gz") -> str:
    """A sourcedir.tar.gz in the local S3 root with `files` (name -> text) plus the `ml` package's contract."""
    target = s3_root / BUCKET / key
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / (target.name + ".d")
    staging.mkdir(exist_ok=True)
    package = {f"ml/{name}": (ROOT / "ml" / name).read_text() for name in ("__init__.py", "contract.py")}
    for name, text in {**files, **package}.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(text)
    with tarfile.open(target, "w:gz") as archive:
        for path in sorted(staging.iterdir()):
            archive.add(path, arcname=path.name)
    return f"s3://{BUCKET}/{key}"


# A training script that takes milliseconds: per-epoch objective peaks at lr = 0.01, so tuners have something
# to find; --sleep spaces the epochs (early stopping acts between them), --fail makes it crash like train.py.
FAKE_TRAIN = textwrap.dedent("""
    import argparse, math, os, sys, time
    from ml import contract

    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", default="32")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--fail", default="no")
    args, _ = parser.parse_known_args()
    if args.fail == "yes":
        out = os.environ["SM_OUTPUT_DIR"]
        os.makedirs(out, exist_ok=True)
        open(os.path.join(out, "failure"), "w").write("DataError: the fake script was told to fail")
        sys.exit(2)
    quality = max(0.0, 1.0 - abs(math.log10(args.lr) + 2.0) / 2.0)
    for epoch in range(1, args.epochs + 1):
        print(f"epoch={epoch}/{args.epochs} " + contract.format_metrics(
            train_loss=1.0 - quality * epoch / args.epochs, valid_accuracy=quality * epoch / args.epochs),
            flush=True)
        time.sleep(args.sleep)
    os.makedirs(os.environ["SM_MODEL_DIR"], exist_ok=True)
    open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.txt"), "w").write(str(args.lr))
    print(contract.format_metrics(test_accuracy=quality), flush=True)
""")


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def runtime_client(sm: Any) -> Any:
    """boto3's sagemaker-runtime client on a LocalSageMaker's runtime URL, in the stand-in's region."""
    return boto3.client("sagemaker-runtime", region_name=sm.region, endpoint_url=sm.runtime_url,
                        aws_access_key_id="local", aws_secret_access_key="local")


@dataclass
class Load:
    """What a background load saw: the calls answered and every exception raised (as repr)."""

    answered: int = 0
    failures: list[str] = field(default_factory=list)


@contextlib.contextmanager
def keep_invoking(sm: Any, invoke: Callable[[Any], object], pause: float = 0.0) -> Iterator[Load]:
    """Call invoke(runtime client) over and over on a background thread (its own client) while the block runs,
    `pause` seconds apart; stopped and joined when the block ends, also when it raises."""
    load = Load()
    stop = threading.Event()

    def run() -> None:
        client = runtime_client(sm)
        while not stop.is_set():
            try:
                invoke(client)
                load.answered += 1
            except Exception as exc:
                load.failures.append(repr(exc))
            if pause:
                stop.wait(pause)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        yield load
    finally:
        stop.set()
        worker.join()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def tuning_request(name: str, data: str, submit: str, strategy: str, ranges: dict, max_jobs: int | None,
                    parallel: int, static: dict | None = None, early_stopping: str = "Off", seed: int = 7) -> dict:
    limits = {"MaxParallelTrainingJobs": parallel, **({"MaxNumberOfTrainingJobs": max_jobs} if max_jobs else {})}
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": strategy, "ResourceLimits": limits, "ParameterRanges": ranges, "RandomSeed": seed,
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": contract.OBJECTIVE_METRIC},
            "TrainingJobEarlyStoppingType": early_stopping},
        "TrainingJobDefinition": {
            "StaticHyperParameters": {"sagemaker_program": "train.py", "sagemaker_submit_directory": submit,
                                      **(static or {})},
            "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File",
                                       "MetricDefinitions": metric_definitions()},
            "RoleArn": ROLE, "InputDataConfig": [
                {"ChannelName": c, "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                                     "S3Uri": f"{data}/{c}"}}}
                for c in contract.CHANNELS],
            "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/tuning"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600}},
    }
