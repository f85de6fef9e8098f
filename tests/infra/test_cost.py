"""Training that costs less, in the requests: staged pretrained weights as an input channel (no trial downloads
them), managed spot with checkpoints for the tuning trials. Member names are checked against botocore's
SageMaker service model, the shapes SageMaker validates requests with."""

from __future__ import annotations

import botocore.session
import pytest

from infra import sagemaker_requests as req
from infra.config import load_config
from ml import contract

SAGEMAKER = botocore.session.get_session().get_service_model("sagemaker")


def _members(shape: str) -> set[str]:
    return set(SAGEMAKER.shape_for(shape).members)


def _plain(request: dict) -> set[str]:
    return {k.removesuffix(".$") for k in request}


def test_cloud_jobs_get_the_staged_weights_channel():
    cfg = load_config({})
    key = f"{cfg.data_prefix}{contract.PRETRAINED_CHANNEL}/resnet50.pt"
    assert cfg.pretrained_key == key
    for channels in (req.tuning_job(cfg, warm_start=False)["TrainingJobDefinition"]["InputDataConfig"],
                     req.training_job(cfg)["InputDataConfig"]):
        (pretrained,) = [c for c in channels if c["ChannelName"] == contract.PRETRAINED_CHANNEL]
        assert pretrained["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://${{{req.BUCKET}}}/{key}"
        assert pretrained["InputMode"] == "File"
        assert _plain(pretrained) <= _members("Channel")
        assert _plain(pretrained["DataSource"]["S3DataSource"]) <= _members("S3DataSource")


def test_no_weights_channel_when_training_from_scratch():
    for context in ({"profile": "local"}, {"training.hyperparameters": {"weights": "none"}}):
        cfg = load_config(context)
        assert cfg.pretrained_key is None
        names = [c["ChannelName"] for c in req.training_job(cfg)["InputDataConfig"]]
        assert names == list(contract.CHANNELS)


def test_weights_key_is_configurable_within_what_the_role_reads():
    cfg = load_config({"pretrained.key": "data/weights/my-resnet50.pt"})
    assert cfg.pretrained_key == "data/weights/my-resnet50.pt"
    for bad in ("weights/resnet50.pt", "data/pretrained/", "data/*.pt"):
        with pytest.raises(ValueError, match=r"pretrained\.key"):
            load_config({"pretrained.key": bad})


def test_tuning_trials_on_spot_resume_from_their_own_checkpoints():
    cfg = load_config({"tuning.spot": True, "tuning.max_runtime_s": 3600})
    definition = req.tuning_job(cfg, warm_start=False)["TrainingJobDefinition"]
    assert _plain(definition) <= _members("HyperParameterTrainingJobDefinition")
    assert definition["EnableManagedSpotTraining"] is True
    stop = definition["StoppingCondition"]
    assert _plain(stop) <= _members("StoppingCondition")
    assert stop["MaxWaitTimeInSeconds"] == 7200 >= stop["MaxRuntimeInSeconds"] == 3600
    checkpoint = definition["CheckpointConfig"]
    assert _plain(checkpoint) <= _members("CheckpointConfig")
    assert checkpoint["LocalPath"] == contract.DEFAULT_CHECKPOINT_DIR
    assert checkpoint["S3Uri.$"] == f"States.Format('s3://${{{req.BUCKET}}}/{req.CHECKPOINTS}{{}}/', " \
                                    f"$.names.tuning_job)"
    # Every trial inherits that one CheckpointConfig: train.py keeps each trial's checkpoint apart.
    assert definition["StaticHyperParameters"][contract.CHECKPOINT_SCOPE] == "job"


def test_tuning_without_spot_is_unchanged():
    definition = req.tuning_job(load_config({}), warm_start=False)["TrainingJobDefinition"]
    assert "EnableManagedSpotTraining" not in definition and "CheckpointConfig" not in definition
    assert set(definition["StoppingCondition"]) == {"MaxRuntimeInSeconds"}


@pytest.mark.parametrize(("context", "message"), [
    ({"tuning.spot": True, "tuning.max_runtime_s": 3600, "tuning.max_wait_s": 60}, "at least"),
    ({"tuning.max_wait_s": 9000}, "spot training only"),
])
def test_spot_wait_is_checked(context, message):
    with pytest.raises(ValueError, match=message):
        load_config(context)
