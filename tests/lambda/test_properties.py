"""Property tests (hypothesis) of the forwarder's request parsing, where inputs are open-ended: any top_k string,
any body with or without the base64 flag, any header spelling. Every input ends in a contract answer (the status and
JSON error of ml/contract.py), never an exception; what is accepted round-trips exactly."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.rest_api import load_forwarder
from ml import contract
from ml.contract import ApiException

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None,  # no timing: the machine is shared
                             suppress_health_check=[HealthCheck.function_scoped_fixture])
STATUS_BY_CODE = {e.code: e.status for e in contract.API_ERRORS}


@pytest.fixture(scope="module")
def forwarder():
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
            mp.setenv(key, value)
        yield load_forwarder()


def _refused(call) -> ApiException:
    with pytest.raises(ApiException) as info:
        call()
    exc = info.value
    assert STATUS_BY_CODE[exc.error.code] == exc.status_code  # one of the contract's errors, with its status
    assert exc.message and "\n" not in exc.message
    return exc


# --- top_k ------------------------------------------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(st.integers(min_value=1, max_value=999_999_999))
def test_top_k_accepts_every_positive_decimal(forwarder, k):
    assert forwarder._top_k({contract.TOP_K_PARAM: str(k)}) == k


@PROPERTY_SETTINGS
@given(st.text(max_size=40))
def test_top_k_any_string_is_a_number_or_a_400(forwarder, raw):
    params = {contract.TOP_K_PARAM: raw}
    if raw.isascii() and raw.isdigit() and len(raw) <= 9 and int(raw) >= 1:
        assert forwarder._top_k(params) == int(raw)
    else:
        exc = _refused(lambda: forwarder._top_k(params))
        assert exc.error == contract.INVALID_PARAMETER
        assert len(exc.message) < 200  # the echo of the value is cut, whatever its length


@PROPERTY_SETTINGS
@given(st.one_of(st.none(), st.dictionaries(st.text(max_size=10).filter(lambda k: k != contract.TOP_K_PARAM),
                                            st.text(max_size=10), max_size=4)))
def test_top_k_absent_is_none(forwarder, params):
    assert forwarder._top_k(params) is None


# --- bodies -----------------------------------------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(st.binary(max_size=4096))
def test_base64_body_round_trips(forwarder, data):
    event = {"body": base64.b64encode(data).decode("ascii"), "isBase64Encoded": True}
    assert forwarder._body(event) == data


@PROPERTY_SETTINGS
@given(st.text(max_size=200))
def test_flagged_base64_body_is_its_decoding_or_a_400(forwarder, text):
    event = {"body": text, "isBase64Encoded": True}
    try:
        expected = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        exc = _refused(lambda: forwarder._body(event))
        assert exc.error == contract.INVALID_IMAGE
    else:
        assert forwarder._body(event) == expected


@PROPERTY_SETTINGS
@given(st.text(max_size=200))
def test_text_body_is_its_utf8(forwarder, text):
    assert forwarder._body({"body": text, "isBase64Encoded": False}) == text.encode("utf-8", "replace")


@PROPERTY_SETTINGS
@given(st.one_of(st.integers(), st.floats(), st.lists(st.integers(), max_size=3), st.binary(max_size=10)))
def test_a_body_that_is_not_a_string_is_a_400(forwarder, body):
    exc = _refused(lambda: forwarder._body({"body": body, "isBase64Encoded": True}))
    assert exc.error == contract.INVALID_IMAGE


# --- headers ----------------------------------------------------------------------------------------------------
@PROPERTY_SETTINGS
@given(st.sampled_from(["content-type", "Content-Type", "CONTENT-TYPE", "cOnTeNt-TyPe"]), st.text(max_size=30))
def test_header_lookup_ignores_the_client_spelling(forwarder, spelling, value):
    assert forwarder._header({"headers": {spelling: value}}, "content-type") == value
    assert forwarder._header({"multiValueHeaders": {spelling: ["first", value]}}, "content-type") == value
