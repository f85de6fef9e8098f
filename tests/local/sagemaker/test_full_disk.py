"""A full disk under the local stand-in (issue 12, attack 15): every I/O failure ends its training job with a
reason; nothing hangs and no error handler raises a second time."""

from __future__ import annotations

import errno
import os
import pathlib
import textwrap

import pytest

from local.sagemaker import LocalSageMaker
from local.sagemaker import training as standin_training
from tests.support.local import s3_data, sourcedir, tiny_dataset, training_request

# Prints far more than a pipe holds (64 KiB): if the stand-in stops reading, the script blocks on print() forever.
NOISY_TRAIN = textwrap.dedent("""
    import os
    for i in range(4000):
        print(f"step {i} " + "x" * 100, flush=True)
    os.makedirs(os.environ["SM_MODEL_DIR"], exist_ok=True)
    open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.txt"), "w").write("ok")
""")


def _no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FillingFile:
    """A log file on a disk that fills up after `budget` bytes (shared by every open of the log)."""

    def __init__(self, budget: list[int]) -> None:
        self.budget = budget

    def write(self, text: str) -> int:
        if self.budget[0] < len(text):
            raise _no_space()
        self.budget[0] -= len(text)
        return len(text)

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None: ...


@pytest.fixture
def sm(tmp_path):
    with LocalSageMaker(tmp_path / "sagemaker", stop_grace_seconds=2.0) as standin:
        yield standin


@pytest.fixture
def request_for(sm, tmp_path, digits_dir):
    tiny_dataset(digits_dir, tmp_path / "tiny", {"train": 1, "valid": 1, "test": 1})
    code = sourcedir(sm.s3.root, {"train.py": NOISY_TRAIN}, key="code/noisy.tar.gz")
    data = s3_data(sm.s3.root, tmp_path / "tiny")
    return lambda name: training_request(name, data, submit_directory=code, max_runtime=600)


def test_a_log_that_cannot_be_written_fails_the_job_instead_of_hanging_it(sm, request_for, monkeypatch):
    budget = [20_000]
    original = pathlib.Path.open

    def open_(self, mode="r", *args, **kwargs):
        if self.name == f"{standin_training.HOST}.log" and "a" in mode:
            return _FillingFile(budget)
        return original(self, mode, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", open_)
    sm.create_training_job(**request_for("noisy-full-log"))
    d = sm.wait_for_training_job("noisy-full-log", timeout=180)
    assert d["TrainingJobStatus"] == "Failed", d.get("FailureReason")
    assert d["FailureReason"].startswith("InternalServerError: the job's log could not be written (No space left")
    assert budget[0] < 200, "the log filled the disk before failing"


def test_no_space_for_the_model_archive_fails_the_job_with_the_reason(sm, request_for, monkeypatch):
    def tar_directory(source, target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(standin_training, "_tar_directory", tar_directory)
    sm.create_training_job(**request_for("noisy-full-upload"))
    d = sm.wait_for_training_job("noisy-full-upload", timeout=180)
    assert d["TrainingJobStatus"] == "Failed" and d["SecondaryStatus"] == "Failed"
    assert "could not be saved" in d["FailureReason"] and "No space left on device" in d["FailureReason"]
    assert "model.tar.gz" in d["FailureReason"]
