"""`imgclf stage-weights`, and `start` / `upload-data` when the pretrained weights every job reads are not staged:
botocore's Stubber on real clients (S3 HeadObject / PutObject shapes are botocore's), and a recorded local run."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import torch
from botocore.stub import ANY
from torchvision import models

import stackfacts as facts
from cli.main import main
from tests.support.cli import BUCKET, STACK, STATE_MACHINE, Scenario, Stubs, make_dataset, record
from tests.support.scratch import module_scratch

KEY = "data/pretrained/resnet18.pt"
WEIGHTS = {facts.OUTPUT_PRETRAINED_URI: f"s3://{BUCKET}/{KEY}", facts.OUTPUT_PRETRAINED_BACKBONE: "resnet18"}
BASE = {facts.OUTPUT_BUCKET: BUCKET, facts.OUTPUT_DATASET: f"s3://{BUCKET}/data/",
        facts.OUTPUT_STATE_MACHINE: STATE_MACHINE}


@pytest.fixture
def stubs() -> Stubs:
    return Stubs(Scenario())


def run(argv: list[str], stubs: Stubs | None, capsys) -> tuple[int, str, str]:
    code = main(argv, backend_factory=(lambda args: stubs.backend()) if stubs else None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expect_stack(stubs: Stubs, outputs: dict[str, str]) -> None:
    stubs.add("cloudformation", "describe_stacks", stubs.scenario.describe_stacks(outputs), {"StackName": STACK})


def expect_head(stubs: Stubs, found: bool) -> None:
    if found:
        stubs.add("s3", "head_object", {"ContentLength": 3, "ETag": '"x"'}, {"Bucket": BUCKET, "Key": KEY})
    else:  # HeadObject's 404 has no body: botocore names the error by the status code
        stubs.error("s3", "head_object", "404", "Not Found", 404, params={"Bucket": BUCKET, "Key": KEY})


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory, request):
    path = module_scratch(request, tmp_path_factory, "w") / "resnet18.pt"
    torch.save(models.get_model("resnet18", weights=None).state_dict(), path)
    return path


# --- start -----------------------------------------------------------------------------------------------------
def test_start_refuses_when_the_weights_are_missing(stubs, capsys):
    expect_stack(stubs, {**BASE, **WEIGHTS})
    expect_head(stubs, found=False)
    code, out, err = run(["start", "--skip-quota-check"], stubs, capsys)
    stubs.assert_done()  # no start_execution
    assert code == 1 and out == "" and err.count("\n") == 1
    assert f"s3://{BUCKET}/{KEY} are missing" in err and "`imgclf stage-weights`" in err


def test_start_runs_when_the_weights_are_staged(stubs, capsys):
    expect_stack(stubs, {**BASE, **WEIGHTS})
    expect_head(stubs, found=True)
    stubs.add("stepfunctions", "start_execution", {"executionArn": STATE_MACHINE + ":x", "startDate":
                                                   dt.datetime.now()}, {"stateMachineArn": STATE_MACHINE,
                                                                         "input": json.dumps({})})
    code, _, err = run(["start", "--skip-quota-check"], stubs, capsys)
    assert code == 0, err
    stubs.assert_done()


def test_start_goes_on_when_s3_will_not_say(stubs, capsys):
    expect_stack(stubs, {**BASE, **WEIGHTS})
    stubs.error("s3", "head_object", "403", "Forbidden", 403, params={"Bucket": BUCKET, "Key": KEY})
    stubs.add("stepfunctions", "start_execution", {"executionArn": STATE_MACHINE + ":x", "startDate":
                                                   dt.datetime.now()}, {"stateMachineArn": STATE_MACHINE,
                                                                         "input": json.dumps({})})
    code, _, err = run(["start", "--skip-quota-check"], stubs, capsys)
    assert code == 0 and "could not check" in err
    stubs.assert_done()


# --- stage-weights ---------------------------------------------------------------------------------------------
def test_stage_a_fitting_file(stubs, resnet18_file, capsys):
    expect_stack(stubs, {**BASE, **WEIGHTS})
    stubs.add("s3", "put_object", {"ETag": '"x"'}, {"Bucket": BUCKET, "Key": KEY, "Body": ANY})
    code, out, err = run(["stage-weights", str(resnet18_file)], stubs, capsys)
    assert code == 0, err
    stubs.assert_done()
    assert f"s3://{BUCKET}/{KEY}" in out


@pytest.mark.parametrize("content, problem", [
    (b"not a checkpoint", "is not a PyTorch state dict"),
    ("resnet34", "does not fit resnet18: unexpected layer1.2.conv1.weight"),
    ("shapes", "wrong shape conv1.weight (8, 3, 7, 7) (needs (64, 3, 7, 7))"),
    ("module", "is not a state dict"),
])
def test_stage_refuses_a_file_that_does_not_fit(stubs, tmp_path, capsys, content, problem):
    path = tmp_path / "w.pt"
    if content == "resnet34":
        torch.save(models.get_model("resnet34", weights=None).state_dict(), path)
    elif content == "shapes":
        state = models.get_model("resnet18", weights=None).state_dict()
        state["conv1.weight"] = torch.zeros(8, 3, 7, 7)
        torch.save(state, path)
    elif content == "module":
        torch.save({"epoch": 3, "note": "a training checkpoint"}, path)
    else:
        path.write_bytes(content)
    expect_stack(stubs, {**BASE, **WEIGHTS})
    code, _, err = run(["stage-weights", str(path)], stubs, capsys)
    stubs.assert_done()  # nothing uploaded
    assert code == 2 and err.count("\n") == 1 and problem in err, err


def test_a_state_dict_without_the_imagenet_head_fits(stubs, tmp_path, capsys):
    state = {k: v for k, v in models.get_model("resnet18", weights=None).state_dict().items()
             if not k.startswith("fc.")}
    torch.save(state, tmp_path / "headless.pt")
    expect_stack(stubs, {**BASE, **WEIGHTS})
    stubs.add("s3", "put_object", {"ETag": '"x"'}, {"Bucket": BUCKET, "Key": KEY, "Body": ANY})
    code, _, err = run(["stage-weights", str(tmp_path / "headless.pt")], stubs, capsys)
    assert code == 0, err
    stubs.assert_done()


def test_stage_without_a_file_builds_torchvisions_weights(stubs, monkeypatch, capsys):
    asked = []
    real = models.get_model

    def offline(name, **kwargs):  # torchvision's download, replaced: no network here
        asked.append((name, kwargs.get("weights")))
        return real(name, weights=None)

    monkeypatch.setattr(models, "get_model", offline)
    expect_stack(stubs, {**BASE, **WEIGHTS})
    stubs.add("s3", "put_object", {"ETag": '"x"'}, {"Bucket": BUCKET, "Key": KEY, "Body": ANY})
    code, _, err = run(["stage-weights"], stubs, capsys)
    assert code == 0, err
    stubs.assert_done()
    assert ("resnet18", "DEFAULT") in asked


def test_stage_without_a_file_offline_says_to_pass_one(stubs, monkeypatch, capsys):
    from urllib.error import URLError

    def offline(name, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(models, "get_model", offline)
    expect_stack(stubs, {**BASE, **WEIGHTS})
    code, _, err = run(["stage-weights"], stubs, capsys)
    stubs.assert_done()  # nothing uploaded
    assert code == 1 and err.count("\n") == 1 and "`imgclf stage-weights FILE`" in err


def test_start_on_an_older_stack_without_the_backbone_output(stubs, capsys):
    expect_stack(stubs, {**BASE, facts.OUTPUT_PRETRAINED_URI: WEIGHTS[facts.OUTPUT_PRETRAINED_URI]})
    expect_head(stubs, found=False)
    code, _, err = run(["start", "--skip-quota-check"], stubs, capsys)
    assert code == 1 and "`imgclf stage-weights`" in err


def test_stage_on_a_stack_that_wants_no_weights(stubs, resnet18_file, capsys):
    expect_stack(stubs, BASE)
    code, _, err = run(["stage-weights", str(resnet18_file)], stubs, capsys)
    assert code == 1 and "asks for no pretrained weights" in err


# --- a local run -----------------------------------------------------------------------------------------------
@pytest.fixture
def local_run(tmp_path):
    root = tmp_path / "run"
    record(root, Scenario(), stack_outputs=WEIGHTS)
    return root


def test_upload_data_hints_then_stage_weights_locally(local_run, resnet18_file, tmp_path, capsys):
    data = tmp_path / "digits"
    make_dataset(data)
    code, _, err = run(["upload-data", str(data), "--local", str(local_run)], None, capsys)
    assert code == 0, err
    assert "hint:" in err and "`imgclf stage-weights`" in err
    code, _, err = run(["stage-weights", "--local", str(local_run), str(resnet18_file)], None, capsys)
    assert code == 0, err
    staged = local_run / "s3" / BUCKET / KEY
    assert staged.read_bytes() == resnet18_file.read_bytes()
    code, _, err = run(["upload-data", str(data), "--local", str(local_run)], None, capsys)
    assert code == 0 and "hint:" not in err
