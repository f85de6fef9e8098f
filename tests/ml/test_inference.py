"""The inference handlers and the careful decoding they share with training, in process (the `ml` package, as in
the container): odd-but-valid images come out upright RGB, bad ones raise the contract's errors and nothing else."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sagemaker_inference.errors import BaseInferenceToolkitError

from ml import contract, imaging, inference
from tests.support import ROOT
from tests.support.serve import (
    BAD_AND_ODD,
    GOOD_PNG,
    animated_gif,
    cmyk_jpeg,
    digit,
    encode,
    png16,
    png_declaring,
    random_bytes,
)

ApiException = contract.ApiException
REDUCING_GAP, TransformSettings, decode_image = imaging.REDUCING_GAP, imaging.TransformSettings, imaging.decode_image
build_transforms = imaging.build_transforms

EXIF_ORIENTATION = 0x0112
T = Image.Transpose
# What a viewer does for each EXIF orientation, and so the inverse a camera stored.
VIEW = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_270,
        7: T.TRANSVERSE, 8: T.ROTATE_90}
STORE = {**VIEW, 6: T.ROTATE_90, 8: T.ROTATE_270}


def quadrants(width: int = 40, height: int = 20) -> Image.Image:
    """Four colours in four quadrants: any turn or flip moves them."""
    arr = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    arr[:h, :w], arr[:h, w:], arr[h:, :w], arr[h:, w:] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
    return Image.fromarray(arr)


# --- decoding ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation):
    upright = quadrants()
    stored = upright if orientation == 1 else upright.transpose(STORE[orientation])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    decoded = decode_image(encode(stored, "PNG", exif=exif.tobytes()))
    assert decoded.size == upright.size
    assert np.array_equal(np.asarray(decoded), np.asarray(upright)), f"orientation {orientation} not applied"


def test_exif_orientation_on_jpeg():
    upright = quadrants(64, 32)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    decoded = np.asarray(decode_image(encode(upright.transpose(STORE[6]), "JPEG", exif=exif.tobytes(), quality=98)),
                         dtype=int)
    assert decoded.shape == (32, 64, 3)
    assert np.abs(decoded[4, 4] - (255, 0, 0)).max() < 40 and np.abs(decoded[28, 60] - (255, 255, 0)).max() < 40


def test_transparency_is_composited_over_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    img.putpixel((0, 0), (10, 20, 30, 255))
    decoded = decode_image(encode(img))
    assert decoded.getpixel((3, 3)) == (255, 255, 255) and decoded.getpixel((0, 0)) == (10, 20, 30)
    palette = img.convert("P")
    assert decode_image(encode(palette, transparency=0)).mode == "RGB"


def test_sixteen_bit_is_scaled_not_clipped():
    arr = np.array([[0, 32896, 65535]], dtype=np.uint16)
    decoded = np.asarray(decode_image(encode(Image.fromarray(arr))))
    assert decoded[0, :, 0].tolist() == [0, 128, 255]
    assert decode_image(png16()).mode == "RGB"


def test_cmyk_becomes_rgb():
    cyan = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    r, g, b = decode_image(encode(cyan, "JPEG", quality=100)).getpixel((4, 4))
    assert r < 30 and g > 220 and b > 220
    assert decode_image(cmyk_jpeg()).mode == "RGB"


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "RGBA", "I", "F"])
def test_every_mode_becomes_rgb(mode):
    img = digit(24, mode="L").convert(mode)
    fmt = "TIFF" if mode in ("I", "F") else "PNG"
    decoded = decode_image(encode(img, fmt))
    assert decoded.mode == "RGB" and decoded.size == (24, 24)
    assert np.asarray(decoded).max() > np.asarray(decoded).min(), "the glyph survived the conversion"


def test_first_frame_of_an_animation():
    assert decode_image(animated_gif()).size == (32, 32)


@pytest.mark.parametrize(("size", "ok"), [((1, 1), True), ((1000, 20), True), ((20, 1000), True),
                                          ((1020, 20), False), ((20, 1020), False)])
def test_aspect_ratio_bound(size, ok):
    data = encode(Image.new("L", size, 100))
    if ok:
        assert decode_image(data).size == size
    else:
        with pytest.raises(ApiException) as info:
            decode_image(data)
        assert info.value.error == contract.UNPROCESSABLE_IMAGE


def test_pixel_budget_is_checked_before_decoding():
    # 8000 x 5001 = 40,008,000 pixels, just over the budget, and far under Pillow's own bomb threshold.
    with pytest.raises(ApiException) as info:
        decode_image(png_declaring(8000, 5001))
    assert info.value.error == contract.UNPROCESSABLE_IMAGE and "40,000,000" in info.value.message
    for side in (10000, 20000):  # Pillow's warning (> 89 M) and error (> 179 M) thresholds: still a 422
        with pytest.raises(ApiException) as info:
            decode_image(png_declaring(side, side))
        assert info.value.error == contract.UNPROCESSABLE_IMAGE


@pytest.mark.parametrize("min_side", [32, 256])
def test_large_jpegs_decode_reduced_but_never_below_the_model_size(min_side):
    data = encode(quadrants(3000, 2000), "JPEG")
    decoded = decode_image(data, min_side=min_side)
    assert min(decoded.size) >= min_side and decoded.size[0] < 3000
    # Other formats are reduced by a whole factor after decoding, never below REDUCING_GAP x the model's side.
    png = decode_image(encode(quadrants(300, 200)), min_side=min_side).size
    assert min(png) >= min(200, min_side * REDUCING_GAP)
    assert (png == (300, 200)) == (2 * min_side * REDUCING_GAP > 200)


def _mutants(n: int = 240):
    rng = np.random.default_rng(7)
    seeds = [encode(digit(48), fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")]
    for i in range(n):
        data = bytearray(seeds[i % len(seeds)])
        how = i % 3
        if how == 0:  # flip bytes past the magic number
            for pos in rng.integers(8, len(data), 1 + i % 8):
                data[pos] ^= int(rng.integers(1, 256))
        elif how == 1:  # truncate
            data = data[: int(rng.integers(8, len(data)))]
        else:  # splice random bytes in
            pos = int(rng.integers(8, len(data)))
            data[pos:pos] = random_bytes(int(rng.integers(1, 64)), seed=i)
        yield bytes(data)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupted_images_raise_only_contract_errors():
    """Fuzz: whatever Pillow's plugins raise inside, a broken file is a 400 or a 422, never anything else."""
    outcomes = {"ok": 0, 400: 0, 422: 0}
    for data in _mutants():
        try:
            assert decode_image(data, min_side=32).mode == "RGB"
            outcomes["ok"] += 1
        except ApiException as exc:
            assert exc.status_code in (400, 422), exc.message
            assert "Traceback" not in exc.message and len(exc.message) < 300
            assert not re.search(r"0x[0-9a-f]{6,}", exc.message), exc.message  # no memory address
            outcomes[exc.status_code] += 1
    assert outcomes[400] > 50, outcomes  # the fuzz really hits the error paths


@pytest.mark.parametrize("case", [c for c in BAD_AND_ODD if c.status == 200 and not c.query],
                         ids=lambda c: c.name)
def test_odd_but_valid_images_preprocess_to_the_model_input(case):
    settings = TransformSettings.for_size(32)
    tensor = build_transforms(settings)[1](decode_image(case.make(), min_side=settings.resize_size))
    assert tuple(tensor.shape) == (3, 32, 32)
    assert bool(tensor.isfinite().all())


# --- the handlers -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor(trained_model):
    return inference.model_fn(str(trained_model))


@pytest.mark.slow
def test_model_fn_reads_the_training_transform(predictor, trained_model):
    config = json.loads((trained_model / contract.MODEL_CONFIG_FILE).read_text())
    assert predictor.classes == config["classes"] == [str(d) for d in range(10)]
    assert predictor.settings == TransformSettings.from_dict(config["transforms"])
    assert not predictor.model.training


@pytest.mark.slow
def test_preprocess_is_trainings_evaluation_transform(predictor):
    image = decode_image(GOOD_PNG, min_side=predictor.settings.resize_size)
    expected = build_transforms(predictor.settings)[1](image).unsqueeze(0)
    assert bool((predictor.preprocess(GOOD_PNG) == expected).all())


@pytest.mark.slow
def test_handlers_answer_every_class_best_first(predictor, digits_dir):
    right = total = 0
    for folder in sorted((digits_dir / "test").iterdir()):
        for path in sorted(folder.glob("*.png"))[:3]:
            request = inference.input_fn(path.read_bytes(), "image/png")
            body, content_type = inference.output_fn(inference.predict_fn(request, predictor), "application/json")
            assert content_type == contract.JSON_CONTENT_TYPE
            predictions = json.loads(body)["predictions"]
            scores = [p["score"] for p in predictions]
            assert len(predictions) == 10 and scores == sorted(scores, reverse=True)
            assert sum(scores) <= 1.0 + 1e-9 and all(round(s, 6) == s for s in scores)
            right += predictions[0]["label"] == folder.name
            total += 1
    assert right >= 0.8 * total, f"{right}/{total}"


@pytest.mark.slow
def test_predict_top_k_is_clamped(predictor):
    assert len(predictor.predict(GOOD_PNG, top_k=3)["predictions"]) == 3
    assert len(predictor.predict(GOOD_PNG, top_k=99)["predictions"]) == 10
    assert len(predictor.predict(GOOD_PNG, top_k=0)["predictions"]) == 1


@pytest.mark.parametrize(("data", "content_type", "error"), [
    (b"", "image/png", contract.EMPTY_BODY),
    ('{"image": "x"}', "application/json", contract.UNSUPPORTED_MEDIA_TYPE),  # the toolkit passes JSON as str
    (b"GIF89a" + b"\x00" * 10, "image/gif", None),  # sniffed as an image: refused later, by predict_fn
    (b"plain", "image/png", contract.INVALID_IMAGE),
])
def test_input_fn_errors_carry_status_and_contract_json(data, content_type, error):
    if error is None:
        assert inference.input_fn(data, content_type).format == "GIF"
        return
    with pytest.raises(BaseInferenceToolkitError) as info:  # the toolkit's class: it keeps the status (else 500)
        inference.input_fn(data, content_type)
    assert (info.value.status_code, info.value.phrase) == (error.status, error.code)
    message = json.loads(info.value.message)
    assert message == contract.error_body(error, message["error"]["message"])


@pytest.mark.slow
@pytest.mark.parametrize(("data", "error"), [(png_declaring(20000, 20000), contract.UNPROCESSABLE_IMAGE),
                                             (b"GIF89a" + b"\x00" * 10, contract.INVALID_IMAGE),
                                             (GOOD_PNG[:100], contract.INVALID_IMAGE)])
def test_predict_fn_errors_carry_status_and_contract_json(predictor, data, error):
    request = inference.input_fn(data, "image/png")
    with pytest.raises(BaseInferenceToolkitError) as info:
        inference.predict_fn(request, predictor)
    assert info.value.status_code == error.status
    assert "\n" not in info.value.message  # one line: the toolkit appends "\n<traceback>" to it
    assert json.loads(info.value.message)["error"]["code"] == error.code


def test_image_bytes_are_read_from_any_buffer():
    for data in (GOOD_PNG, bytearray(GOOD_PNG), memoryview(GOOD_PNG).tobytes()):
        assert inference.input_fn(data, "image/png").body == GOOD_PNG
    assert Image.open(io.BytesIO(GOOD_PNG)).size == (32, 32)


# --- bounded decoding (issue 12, item 17) -------------------------------------------------------------------------
DECODE_MEMORY = r"""
import json, pathlib, resource, sys, time
from ml import imaging

def hwm():  # this process's peak RSS (VmHWM: ru_maxrss would carry the parent's peak across exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

folder = pathlib.Path(sys.argv[1])
crafted = {p.stem: p.read_bytes() for p in sorted(folder.iterdir())}
imaging.decode_image(crafted.pop("small"), min_side=256)
base_peak, base = hwm(), rss()
out = {"outcomes": {}, "cpu": {}}
for name, data in crafted.items():
    start = time.process_time()
    try:
        out["outcomes"][name] = list(imaging.decode_image(data, min_side=256).size)
    except imaging.ApiException as exc:
        out["outcomes"][name] = exc.status_code
    out["cpu"][name] = round(time.process_time() - start, 3)
out["peak_growth"] = hwm() - base_peak
out["kept"] = rss() - base
print(json.dumps(out))
"""


def _crafted(folder: Path) -> dict[str, int]:
    """Attacker-sized files (a few hundred KB) with huge dimensions, all within the pixel budget."""
    def save(name: str, img: Image.Image, fmt: str = "PNG", **params) -> None:
        img.save(folder / f"{name}.{fmt.lower()}", fmt, **params)

    save("small", Image.new("RGB", (64, 64), (200, 10, 10)))
    save("rgb-6000x6000", Image.new("RGB", (6000, 6000), (20, 30, 40)), compress_level=9)
    save("grey-6300x6300", Image.new("L", (6300, 6300), 90), compress_level=9)
    save("rgba-4200x4200", Image.new("RGBA", (4200, 4200), (1, 2, 3, 4)), compress_level=9)
    save("palette-6000x6000", Image.new("P", (6000, 6000), 3), compress_level=9)
    save("16-bit-6000x6000", Image.fromarray(np.full((6000, 6000), 40000, np.uint16)), compress_level=9)
    save("16-bit-3000x3000", Image.fromarray(np.full((3000, 3000), 40000, np.uint16)), compress_level=9)
    save("float-5000x5000", Image.fromarray(np.full((5000, 5000), 0.5, np.float32)), "TIFF",
         compression="tiff_adobe_deflate")
    return {p.stem: p.stat().st_size for p in folder.iterdir()}


def test_decoding_is_bounded_in_memory_and_memory_returns(tmp_path):
    """Each crafted file is refused by the byte budget before decoding, or decoded and reduced at once: the
    process's peak stays near the budget (not ~1 GB) and its memory falls back after."""
    import subprocess

    sizes = _crafted(tmp_path)
    assert max(sizes.values()) < 400_000, sizes
    root = ROOT
    result = subprocess.run([sys.executable, "-c", DECODE_MEMORY, str(tmp_path)], capture_output=True, text=True,
                            cwd=root, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    outcomes = out["outcomes"]
    for name in ("rgb-6000x6000", "rgba-4200x4200", "palette-6000x6000", "16-bit-6000x6000", "float-5000x5000"):
        assert outcomes[name] == contract.UNPROCESSABLE_IMAGE.status, (name, outcomes)
    for name in ("grey-6300x6300", "16-bit-3000x3000"):  # within the byte budget: decoded, then reduced
        assert isinstance(outcomes[name], list) and 512 <= min(outcomes[name]) < 1024, (name, outcomes)
    mib = 2**20
    assert out["peak_growth"] < contract.MAX_DECODED_BYTES + 32 * mib, (out["peak_growth"] / mib, out)
    assert out["kept"] < 16 * mib, (out["kept"] / mib, out)


def test_the_byte_budget_counts_bytes_per_pixel():
    assert imaging.held_bytes("L", 100, 10) == 1000
    assert imaging.held_bytes("I;16", 100, 10) == 2000
    assert imaging.held_bytes("RGB", 100, 10) == imaging.held_bytes("F", 100, 10) == 4000
    with pytest.raises(ApiException) as info:  # 4,100 x 4,100 RGBA: 17 M pixels, 64.1 MiB; the limit is bytes
        decode_image(encode(Image.new("RGBA", (4100, 4100), (1, 2, 3, 4))), min_side=256)
    assert info.value.error == contract.UNPROCESSABLE_IMAGE and "MiB" in info.value.message


# --- model.json is checked when the model loads (issue 12, item 19) -------------------------------------------------
@pytest.mark.parametrize(("change", "named"), [
    ({"transforms": {"image_size": 100_000, "resize_size": 100_000}}, "image_size"),
    ({"transforms": {"image_size": 32, "resize_size": 16}}, "resize_size"),
    ({"transforms": {"std": [0, 1, 1]}}, "std"),
    ({"transforms": {"mean": ["a", 1, 1]}}, "mean"),
    ({"transforms": {"augment": "rotate"}}, "augment"),
    ({"transforms": "big"}, "transforms"),
    ({"classes": []}, "classes"),
    ({"classes": ["a", "a"]}, "duplicate"),
    ({"backbone": 7}, "backbone"),
])
def test_absurd_model_config_is_refused_at_load(tmp_path, change, named):
    from tests.support.serve import write_random_model

    model_dir = write_random_model(tmp_path / "model")
    config = json.loads((model_dir / contract.MODEL_CONFIG_FILE).read_text())
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    (model_dir / contract.MODEL_CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=named) as info:
        inference.model_fn(str(model_dir))
    assert contract.MODEL_CONFIG_FILE in str(info.value)


def test_a_valid_model_config_loads(tmp_path):
    from tests.support.serve import write_random_model

    predictor = inference.model_fn(str(write_random_model(tmp_path / "model", classes=("x", "y", "z"))))
    assert predictor.classes == ["x", "y", "z"] and predictor.settings.image_size == 32
    assert len(predictor.predict(GOOD_PNG)["predictions"]) == 3


@pytest.mark.parametrize("magic", [b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"\xff\xd8\xff"])
def test_no_message_carries_a_memory_address(magic):
    # Issue 12 item 21: Pillow's "cannot identify image file <_io.BytesIO object at 0x7f...>" reached clients.
    with pytest.raises(ApiException) as info:
        decode_image(magic + b"\0" * 40)
    assert info.value.error == contract.INVALID_IMAGE
    assert " at 0x" not in info.value.message and "object" not in info.value.message, info.value.message
