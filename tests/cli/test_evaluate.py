"""cli/evaluate.py: the trained model over a test folder, with serving's own decoding, in the CLI's process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cli.evaluate import evaluate
from ml import contract
from tests.support.scratch import module_scratch
from tests.support.serve import GOOD_PNG, write_random_model


@pytest.fixture(scope="module")
def random_model(tmp_path_factory, request) -> Path:
    return write_random_model(module_scratch(request, tmp_path_factory, "model") / "model", classes=("a", "b"))


def test_an_undecodable_test_image_is_skipped_not_a_crash(tmp_path, random_model):
    # Issue 13: ml/imaging.py raised the flat `contract.ApiException`, a class other than the ml.contract one the
    # CLI catches, so one bad file crashed `imgclf report --evaluate`.
    for label in ("a", "b"):
        (tmp_path / "test" / label).mkdir(parents=True)
        (tmp_path / "test" / label / "good.png").write_bytes(GOOD_PNG)
    (tmp_path / "test" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    predictions = evaluate(random_model, tmp_path / "test")
    assert sorted(Path(p.image).name for p in predictions.items) == ["good.png", "good.png"]
    assert predictions.classes == ["a", "b"]


def test_the_host_holds_one_contract():
    from ml import imaging, inference

    assert inference.ApiException is contract.ApiException
    assert imaging.contract is contract
    assert contract.__spec__.name == "ml.contract"
    assert "contract" not in sys.modules  # no flat second copy: ml is one package everywhere
