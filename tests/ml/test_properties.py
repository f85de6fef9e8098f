"""Property tests (hypothesis) of the image request checks (ml/contract.py) and decoding (ml/imaging.py): any bytes,
any declared media type, any small image in any mode and format. The answer is always the contract's: an image that
fits is decoded to RGB at its size; everything else is one of the API's errors, never another exception."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ml import contract, imaging
from ml.contract import ApiException

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)  # no timing: the machine is shared
MEDIA_TYPES = st.one_of(st.none(), st.sampled_from([*contract.ACCEPTED_CONTENT_TYPES, "text/plain",
                                                     "application/json", "image/webp", "Image/PNG; q=1", ""]),
                        st.text(max_size=30))
FORMATS = {"PNG": {}, "JPEG": {"quality": 90}, "GIF": {}, "BMP": {}, "TIFF": {}, "WEBP": {"lossless": True}}


@PROPERTY_SETTINGS
@given(st.binary(max_size=2048), MEDIA_TYPES)
def test_check_image_request_is_a_format_or_a_contract_error(body, content_type):
    try:
        fmt = contract.check_image_request(body, content_type, max_bytes=1024)
    except ApiException as exc:
        assert exc.error in contract.API_ERRORS
        if not body:
            assert exc.error == contract.EMPTY_BODY
        elif len(body) > 1024:
            assert exc.error == contract.PAYLOAD_TOO_LARGE
        else:
            assert contract.sniff_image_format(body) is None
            assert exc.error in (contract.INVALID_IMAGE, contract.UNSUPPORTED_MEDIA_TYPE)
    else:
        assert 0 < len(body) <= 1024
        assert fmt == contract.sniff_image_format(body) and fmt in contract.IMAGE_FORMATS


@PROPERTY_SETTINGS
@given(st.text(max_size=40))
def test_media_type_is_idempotent_and_drops_parameters(content_type):
    once = contract.media_type(content_type)
    assert contract.media_type(once) == once
    assert ";" not in once and once == once.strip().lower()


@st.composite
def small_images(draw):
    mode = draw(st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK"]))
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    color = draw(st.integers(0, 255))
    img = Image.new(mode if mode != "I;16" else "I", (width, height), color)
    if mode == "I;16":
        img = img.convert("I;16")
    return img, fmt


def _encode(img: Image.Image, fmt: str) -> bytes | None:
    buffer = io.BytesIO()
    try:
        img.save(buffer, format=fmt, **FORMATS[fmt])
    except (OSError, ValueError, KeyError):  # this mode cannot be written in this format: not a case
        return None
    return buffer.getvalue()


@PROPERTY_SETTINGS
@given(small_images())
def test_every_small_image_decodes_to_rgb_at_its_size(case):
    img, fmt = case
    data = _encode(img, fmt)
    if data is None:
        return
    aspect_ok = max(img.size) / min(img.size) <= contract.MAX_ASPECT_RATIO
    assert contract.check_image_request(data, None, contract.API_MAX_IMAGE_BYTES) == fmt
    if not aspect_ok:
        with pytest.raises(ApiException) as info:
            imaging.decode_image(data)
        assert info.value.error == contract.UNPROCESSABLE_IMAGE
        return
    decoded = imaging.decode_image(data)
    assert decoded.mode == "RGB" and decoded.size == img.size


@PROPERTY_SETTINGS
@given(small_images(), st.data())
def test_truncated_or_mutated_images_are_a_contract_error_or_an_rgb_image(case, data):
    img, fmt = case
    encoded = _encode(img, fmt)
    if encoded is None or len(encoded) < 2:
        return
    cut = data.draw(st.integers(1, len(encoded) - 1))
    position = data.draw(st.integers(0, len(encoded) - 1))
    flipped = bytearray(encoded)
    flipped[position] ^= data.draw(st.integers(1, 255))
    for mutated in (encoded[:cut], bytes(flipped)):
        try:
            decoded = imaging.decode_image(mutated)
        except ApiException as exc:
            assert exc.error in (contract.EMPTY_BODY, contract.INVALID_IMAGE, contract.UNPROCESSABLE_IMAGE)
            assert "\n" not in exc.message
        else:
            assert decoded.mode == "RGB" and min(decoded.size) >= 1
