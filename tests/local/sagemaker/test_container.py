"""Training jobs get the environment and arguments the SageMaker training toolkit (sagemaker-training) gives an
entry point, computed by the toolkit itself, and a source directory's requirements.txt is checked against the DLC
the toolkit would pip-install it into (local/sagemaker/container.py)."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

import stackfacts as facts
from awsshapes import parse_s3_uri, s3_uri
from local.sagemaker import LocalSageMaker
from local.sagemaker.container import (
    PYTORCH_TRAINING_2_6,
    ContainerError,
    check_requirements,
    dlc_for_image,
    toolkit_launch,
    wheel_problems,
)
from ml import contract
from tests.support import ROOT
from tests.support.local import BUCKET, metric_definitions, sourcedir, training_request
from tests.support.scratch import module_scratch

# An entry point that records what it was started with.
DUMP = """
import json, os, sys
from ml import contract
out = os.environ["SM_OUTPUT_DATA_DIR"]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "seen.json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}, f)
print(contract.format_metrics(valid_accuracy=0.5), flush=True)
"""
IMAGE_2_6 = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.6.0-cpu-py312"


@pytest.fixture(scope="module")
def sm(tmp_path_factory, request):
    with LocalSageMaker(module_scratch(request, tmp_path_factory, "sagemaker"), stop_grace_seconds=2.0) as standin:
        for channel in contract.CHANNELS:  # the channels only need to exist: the script reads none
            folder = standin.s3.root / BUCKET / "data" / channel / "a"
            folder.mkdir(parents=True)
            (folder / "x.png").write_bytes(b"x")
        yield standin


@pytest.fixture(scope="module")
def dump_code(sm) -> str:
    return sourcedir(sm.s3.root, {"train.py": DUMP}, key="code/dump.tar.gz")


def _output_archive(sm: LocalSageMaker, name: str) -> Path:
    """Where SageMaker keeps a job's output/data once the job has ended (the instance's volume is gone)."""
    described = sm.describe_training_job(TrainingJobName=name)
    bucket, prefix = parse_s3_uri(described["OutputDataConfig"]["S3OutputPath"])
    return sm.s3.path(s3_uri(bucket, facts.job_output_key(prefix, name, facts.OUTPUT_ARCHIVE)))


def _seen(sm: LocalSageMaker, name: str) -> dict:
    with tarfile.open(_output_archive(sm, name)) as archive:
        member = archive.extractfile("seen.json")
        assert member is not None
        return json.loads(member.read())


def _run(sm: LocalSageMaker, request: dict) -> dict:
    sm.create_training_job(**request)
    return sm.wait_for_training_job(request["TrainingJobName"], timeout=300)


def _run_on_the_dlc(sm: LocalSageMaker, name: str, files: dict[str, str], debugger: bool = False) -> dict:
    """A job on the PyTorch 2.6 DLC's image whose source directory holds DUMP and `files`: its description."""
    code = sourcedir(sm.s3.root, {"train.py": DUMP, **files}, key=f"code/{name}.tar.gz")
    request = training_request(name, f"s3://{BUCKET}/data", debugger=debugger, submit_directory=code)
    request["AlgorithmSpecification"]["TrainingImage"] = IMAGE_2_6
    return _run(sm, request)


def _refused_before_training(sm: LocalSageMaker, described: dict) -> str:
    """Failed on its requirements, before the script ran: the FailureReason."""
    assert described["TrainingJobStatus"] == "Failed"
    reason = described["FailureReason"]
    assert reason.startswith("AlgorithmError: InstallRequirementsError:")
    assert not _output_archive(sm, described["TrainingJobName"]).exists(), "the script ran"
    return reason


def test_the_final_job_gets_the_toolkits_environment_and_arguments(sm, dump_code):
    name = "final-job"
    request = training_request(name, f"s3://{BUCKET}/data", debugger=True, submit_directory=dump_code)
    request["HyperParameters"] = {"sagemaker_program": "train.py", "sagemaker_submit_directory": dump_code,
                                  "lr": "0.0030", contract.EPOCHS: "2", contract.BATCH_SIZE: "64", "flag": "true",
                                  "label": '"quoted"'}
    described = _run(sm, request)
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    seen, job_dir = _seen(sm, name), sm.training_job_dir(name)
    env, argv = seen["env"], seen["argv"]
    # The toolkit's mapping: names sorted, values JSON-decoded then printed ("true" -> True, "0.0030" -> 0.003),
    # its own sagemaker_* settings left out. The checkpoint directory is the stand-in's /opt/ml/checkpoints.
    toolkit_args = ["--batch-size", "64", "--epochs", "2", "--flag", "True", "--label", "quoted", "--lr", "0.003"]
    assert argv[:len(toolkit_args)] == toolkit_args
    assert argv[len(toolkit_args):] == ["--checkpoint-dir", str(sm.s3.path(request["CheckpointConfig"]["S3Uri"]))]
    hps = {"batch-size": 64, "epochs": 2, "flag": True, "label": "quoted", "lr": 0.003}
    assert json.loads(env["SM_HPS"]) == hps and json.loads(env["SM_USER_ARGS"]) == toolkit_args
    assert (env["SM_HP_EPOCHS"], env["SM_HP_BATCH-SIZE"], env["SM_HP_FLAG"]) == ("2", "64", "true")
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert training_env["job_name"] == name and training_env["hyperparameters"] == hps
    assert training_env["user_entry_point"] == "train.py" and training_env["module_dir"] == dump_code
    assert training_env["channel_input_dirs"] == {c: str(job_dir / "input" / "data" / c) for c in contract.CHANNELS}
    assert env["SM_MODULE_DIR"] == dump_code and env["SM_USER_ENTRY_POINT"] == "train.py"
    # The files SageMaker writes, and what the toolkit read from them.
    config = job_dir / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == request["HyperParameters"]
    resource = json.loads((config / "resourceconfig.json").read_text())
    assert json.loads(env["SM_RESOURCE_CONFIG"]) == resource and resource["current_host"] == env["SM_CURRENT_HOST"]
    assert env["SM_CURRENT_INSTANCE_TYPE"] == "ml.m5.large" and json.loads(env["SM_HOSTS"]) == [facts.TRAINING_HOST]
    assert set(json.loads(env["SM_INPUT_DATA_CONFIG"])) == set(contract.CHANNELS)
    assert json.loads(env["SM_CHANNELS"]) == sorted(contract.CHANNELS)
    assert env["SM_CHANNEL_TRAIN"] == str(job_dir / "input" / "data" / contract.TRAIN)
    assert env["SM_NUM_CPUS"] == str(os.cpu_count()) and env["SM_NUM_GPUS"].isdigit()
    assert (env["SM_MODEL_DIR"], env["SM_OUTPUT_DATA_DIR"], env["SM_INPUT_CONFIG_DIR"]) == (
        str(job_dir / "model"), str(job_dir / "output" / "data"), str(config))
    assert env["TRAINING_JOB_NAME"] == name and seen["cwd"] == str(job_dir / "code")
    # Debugger: the hook config SageMaker writes into input/config, where smdebug is told to read it.
    assert env["SMDEBUG_CONFIG_FILE_PATH"] == str(config / "debughookconfig.json")
    assert json.loads(Path(env["SMDEBUG_CONFIG_FILE_PATH"]).read_text())["CollectionConfigurations"]


def test_a_tuning_trial_keeps_the_tuners_objective_from_the_script(sm, dump_code):
    """The tuner adds _tuning_objective_metric to each trial's hyperparameters; the toolkit counts it among its own
    (sagemaker_training/params.py SAGEMAKER_HYPERPARAMETERS), so the script never sees it."""
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="trial-env",
        HyperParameterTuningJobConfig={
            "Strategy": "Random", "RandomSeed": 1,
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 1, "MaxParallelTrainingJobs": 1},
            "ParameterRanges": {"ContinuousParameterRanges": [
                {"Name": contract.LR, "MinValue": "0.001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}]},
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": contract.OBJECTIVE_METRIC}},
        TrainingJobDefinition={
            "StaticHyperParameters": {"sagemaker_program": "train.py", "sagemaker_submit_directory": dump_code,
                                      contract.EPOCHS: "1"},
            "AlgorithmSpecification": {"TrainingImage": IMAGE_2_6, "TrainingInputMode": "File",
                                       "MetricDefinitions": metric_definitions()},
            "RoleArn": training_request("x", "s3://x")["RoleArn"],
            "InputDataConfig": [{"ChannelName": c, "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/{c}"}}} for c in contract.CHANNELS],
            "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/tuning"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 300}})
    tuned = sm.wait_for_tuning_job("trial-env", timeout=300)
    trial = tuned["BestTrainingJob"]["TrainingJobName"]
    seen = _seen(sm, trial)
    argv, env = seen["argv"], seen["env"]
    lr = argv[argv.index("--lr") + 1]
    assert argv[:4] == ["--epochs", "1", "--lr", lr] and argv[4] == "--checkpoint-dir"
    hyperparameters = json.loads((sm.training_job_dir(trial) / "input" / "config" / "hyperparameters.json").read_text())
    assert hyperparameters["_tuning_objective_metric"] == contract.OBJECTIVE_METRIC
    assert set(json.loads(env["SM_HPS"])) == {"epochs", "lr"} and "SM_HP__TUNING_OBJECTIVE_METRIC" not in env
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert training_env["job_name"] == trial and training_env["additional_framework_parameters"] == {}
    assert "SMDEBUG_CONFIG_FILE_PATH" not in env  # tuning trials carry no Debugger hook
    # ml/train.py takes exactly this command line.
    from ml import train

    args = train.parse_args(argv)
    assert (args.epochs, args.lr, args.unknown) == (1, float(lr), [])


def test_a_requirement_that_breaks_the_dlc_fails_before_training(sm):
    described = _run_on_the_dlc(sm, "conflict", {"requirements.txt": "requests>=2\nprotobuf<=3.20.3\n"})
    reason = _refused_before_training(sm, described)
    assert "\n" not in reason
    assert "requirements.txt:2: protobuf<=3.20.3 would downgrade" in reason and "(>=5.28.1)" in reason
    assert "Training" not in [t["Status"] for t in described["SecondaryStatusTransitions"]]


def test_requirements_that_fit_the_dlc_train(sm):
    assert _run_on_the_dlc(sm, "fits", {"requirements.txt": "requests>=2\nnumpy<2.3\n"})["TrainingJobStatus"] \
        == "Completed"


def test_a_requirement_without_a_wheel_for_the_dlcs_python_fails_before_training(sm, tmp_path):
    """pyinstrument-cext (smdebug's profiler, through pyinstrument 3.4.2) has no cp312 wheel: pip would compile it in
    the DLC. pip's resolver is asked, for the DLC's CPython and glibc; without a package index nothing is concluded."""
    probe = tmp_path / "requirements.txt"
    probe.write_text("pyinstrument-cext==0.2.4\n")
    if wheel_problems(probe, PYTORCH_TRAINING_2_6) is None:
        pytest.skip("the package index does not answer here")
    described = _run_on_the_dlc(sm, "nowheel", {"requirements.txt": "requests>=2\npyinstrument-cext==0.2.4\n"})
    assert "pyinstrument-cext has no wheel for CPython 3.12" in _refused_before_training(sm, described)


def test_a_debugger_job_says_what_its_requirements_would_change_in_the_dlc(sm):
    """train.py pip-installs ml/debugger-requirements.txt in a Debugger job's DLC: smdebug's protobuf pin downgrades
    the image's protobuf there. The job goes on (the script's choice), and its log says so."""
    requirements = (ROOT / "ml" / contract.DEBUGGER_REQUIREMENTS).read_text()
    described = _run_on_the_dlc(sm, "debugger-reqs", {contract.DEBUGGER_REQUIREMENTS: requirements}, debugger=True)
    assert described["TrainingJobStatus"] == "Completed"
    log = (sm.training_job_dir("debugger-reqs") / "logs" / f"{facts.TRAINING_HOST}.log").read_text()
    assert "[stand-in] warning: on AWS, debugger-requirements.txt:" in log
    assert "protobuf<=3.20.3 would downgrade the PyTorch training DLC 2.6 (py312)'s preinstalled protobuf" in log


def _job_dir(root: Path, resource: str) -> Path:
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"sagemaker_program": "train.py", "lr": "0.1"}))
    (config / "inputdataconfig.json").write_text(json.dumps({"train": {}}))
    (config / "resourceconfig.json").write_text(resource)
    return root


def test_the_toolkit_reads_the_job_directory_not_the_users_aws_profile(tmp_path):
    job = _job_dir(tmp_path, json.dumps({"current_host": facts.TRAINING_HOST, "hosts": [facts.TRAINING_HOST]}))
    launch = toolkit_launch(job, {**os.environ, "AWS_PROFILE": "no-such-profile"})
    assert launch.argv == ["--lr", "0.1"] and launch.entry_point == "train.py"
    assert launch.env["SM_CHANNEL_TRAIN"] == str(job / "input" / "data" / "train")


def test_an_unreadable_container_config_is_one_line(tmp_path):
    with pytest.raises(ContainerError) as info:
        toolkit_launch(_job_dir(tmp_path, "{broken"), dict(os.environ))
    message = str(info.value)
    assert message.startswith("ClientError: the training toolkit cannot read") and "\n" not in message


# --- the check itself ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "problem"), [
    ("protobuf<=3.20.3", "downgrade"),
    ("protobuf==4.25.3", "downgrade"),
    ("numpy>=2.1", "upgrade"),
    ("torch>=2.7", "upgrade"),
    ("torch!=2.6.0", "replace"),
    ("torch==2.6.0", None),
    ("torchvision~=0.21.0", None),
    ("numpy<2.3", None),
    ("numpy>=1.24,<2", None),
    ("protobuf>=5,<7", None),
    ("pillow==9.0.0", None),  # conda's, unpinned: never reported
    ('protobuf<=3.20.3; python_version < "3.12"', None),  # not installed on the DLC's Python 3.12
    ('torch>=2.7; python_version >= "3.12"', "upgrade"),
    ("not a requirement!", "cannot parse"),
    ("--extra-index-url https://example.com", "not checked"),
])
def test_requirement_lines_against_the_dlc(tmp_path, line, problem):
    path = tmp_path / "requirements.txt"
    path.write_text(f"# a comment\n\n{line}\n")
    problems = check_requirements(path, PYTORCH_TRAINING_2_6)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith("requirements.txt:3: ") and problem in problems[0]


def test_the_dlc_is_found_from_the_training_image():
    for tag in ("2.6.0-cpu-py312", "2.6.0-gpu-py312", "2.6.0-gpu-py312-cu126-ubuntu22.04-sagemaker"):
        assert dlc_for_image(f"763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:{tag}") \
            is PYTORCH_TRAINING_2_6
    assert dlc_for_image("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1") is None
    assert dlc_for_image("img") is None
