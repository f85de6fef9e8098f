"""Property tests (hypothesis) of the stand-in's open-ended inputs: hyperparameter scaling round trips (a tuned value
reaches the script as a string inside its range, and a parent's value warm-starts a job with the same ranges), and
NextToken pagination (every item once, in order, whatever the page size)."""

from __future__ import annotations

import math

import optuna
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from local.sagemaker.api import paginate
from local.sagemaker.errors import SageMakerError
from local.sagemaker.tuning import TuningJob, hyperparameter_value, search_space

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)  # no timing: the machine is shared
optuna.logging.set_verbosity(optuna.logging.WARNING)


@st.composite
def continuous_ranges(draw):
    """A valid ContinuousParameterRange of any ScalingType, and a value optuna could sample from it."""
    scale = draw(st.sampled_from(["Auto", "Linear", "Logarithmic", "ReverseLogarithmic"]))
    if scale == "ReverseLogarithmic":
        low = draw(st.floats(0.0, 0.999, allow_nan=False))
        high = draw(st.floats(low, 0.999999, allow_nan=False, exclude_min=True))
    elif scale == "Logarithmic":
        low = draw(st.floats(1e-9, 1e3, allow_nan=False))
        high = draw(st.floats(low, 1e6, allow_nan=False, exclude_min=True))
    else:
        low = draw(st.floats(-1e6, 1e6, allow_nan=False))
        high = draw(st.floats(low, 1e6 + 1, allow_nan=False, exclude_min=True))
    assume(low < high)
    config = {"ParameterRanges": {"ContinuousParameterRanges": [
        {"Name": "x", "MinValue": repr(low), "MaxValue": repr(high), "ScalingType": scale}]}}
    distribution = search_space(config)[0]["x"]
    internal = draw(st.floats(distribution.low, distribution.high, allow_nan=False))
    return config, low, high, internal


@st.composite
def integer_ranges(draw):
    scale = draw(st.sampled_from(["Auto", "Linear", "Logarithmic"]))
    low = draw(st.integers(1 if scale == "Logarithmic" else -1000, 1000))
    high = draw(st.integers(low, 2000))
    config = {"ParameterRanges": {"IntegerParameterRanges": [
        {"Name": "x", "MinValue": str(low), "MaxValue": str(high), "ScalingType": scale}]}}
    return config, low, high, draw(st.integers(low, high))


def _warm_started(config: dict, tuned: str) -> int:
    """How many of one parent's trials (tuned value `tuned`) seed a job with the same ranges."""
    job = object.__new__(TuningJob)  # only the warm-start state: no stand-in, no trials
    job.space, job.scaling = search_space(config)
    job.warm_start = [{"TrainingJobStatus": "Completed", "TunedHyperParameters": {"x": tuned},
                       "FinalHyperParameterTuningJobObjectiveMetric": {"MetricName": "m", "Value": 0.5}}]
    return job._seed_from_parents(optuna.create_study())


@PROPERTY_SETTINGS
@given(continuous_ranges())
def test_a_continuous_value_reaches_the_script_inside_its_range_and_warm_starts(case):
    config, low, high, internal = case
    scaling = search_space(config)[1]["x"]
    sent = hyperparameter_value(internal, scaling)
    value = float(sent)
    assert math.isfinite(value)
    assert low <= value <= high, f"{sent} outside [{low!r}, {high!r}] ({scaling})"
    assert _warm_started(config, sent) == 1


@PROPERTY_SETTINGS
@given(integer_ranges())
def test_an_integer_value_round_trips(case):
    config, low, high, value = case
    sent = hyperparameter_value(value, search_space(config)[1]["x"])
    assert sent == str(value) and low <= int(sent) <= high
    assert _warm_started(config, sent) == 1


@PROPERTY_SETTINGS
@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5, unique=True), st.data())
def test_a_categorical_value_round_trips(values, data):
    config = {"ParameterRanges": {"CategoricalParameterRanges": [{"Name": "x", "Values": values}]}}
    choice = data.draw(st.sampled_from(values))
    sent = hyperparameter_value(choice, search_space(config)[1]["x"])
    assert sent == choice
    assert _warm_started(config, sent) == 1


# --- pagination --------------------------------------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(st.integers(0, 60), st.integers(1, 100))
def test_pages_cover_every_item_once_in_order(count, max_results):
    items = [{"Name": f"job-{i:03d}"} for i in range(count)]
    seen: list[dict] = []
    params: dict = {"MaxResults": max_results}
    pages = 0
    while True:
        page, token = paginate(items, params)
        pages += 1
        assert len(page) <= max_results
        seen += page
        if token is None:
            break
        assert page, "a NextToken after an empty page would loop forever"
        params = {"MaxResults": max_results, "NextToken": token}
    assert seen == items
    assert pages == max(1, math.ceil(count / max_results))


@PROPERTY_SETTINGS
@given(st.text(min_size=1, max_size=20).filter(lambda t: not (t.isascii() and t.isdigit())))
@example("¹")  # str.isdigit() says yes, int() says no: found by hypothesis in CI
@example("٣")
def test_a_token_that_is_not_ours_is_a_validation_error(token):
    with pytest.raises(SageMakerError):
        paginate([{"Name": "a"}], {"NextToken": token})
