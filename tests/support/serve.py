"""Inputs for the serving tests, generated here with Pillow/numpy (no binary fixtures), and small HTTP helpers."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ml import contract
from tests.support import ROOT

ML_DIR = ROOT / "ml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DIGIT_CLASSES = [str(d) for d in range(10)]  # the classes of local/digits.py's dataset: one folder per digit
EXIF_ORIENTATION = 0x0112


# --- images ---------------------------------------------------------------------------------------------------
def digit(size: int = 32, text: str = "3", mode: str = "RGB") -> Image.Image:
    """A light glyph on black, framed like the local digits dataset."""
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).text((size * 0.3, size * 0.2), text, fill=255, font_size=size * 0.6)
    return img.convert(mode)


def encode(img: Image.Image, fmt: str = "PNG", **params) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **params)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A tiny PNG whose header claims width x height 8-bit grey pixels (a decompression bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024) if idat is None else idat
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_bomb(side: int = 7000) -> bytes:
    """A real, complete PNG of side x side black pixels: ~50 KB on the wire, side² bytes once decoded."""
    row = b"\x00" * (side + 1)  # filter byte + pixels
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return png_declaring(side, side, idat)


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return chunks


def corrupt_png_data(valid_crc: bool = True) -> bytes:
    """A real PNG whose compressed pixel data is garbage; with a valid CRC only the inflate step can notice."""
    chunks = png_chunks(encode(digit(64, mode="RGB")))
    out = PNG_SIGNATURE
    for kind, data in chunks:
        if kind == b"IDAT":
            garbage = bytes(b ^ 0x5A for b in data[2:])
            data = data[:2] + garbage
            if not valid_crc:
                out += struct.pack(">I", len(data)) + kind + data + b"\x00\x00\x00\x00"
                continue
        out += png_chunk(kind, data)
    return out


def cmyk_jpeg() -> bytes:
    return encode(digit(48, mode="RGB").convert("CMYK"), "JPEG", quality=95)


def png16() -> bytes:
    ramp = (np.asarray(digit(32, mode="L"), dtype=np.uint16) * 257).astype(np.uint16)  # 0..65535
    img = Image.fromarray(ramp)
    assert img.mode == "I;16", img.mode
    return encode(img)


def exif_rotated(img: Image.Image, fmt: str = "PNG") -> bytes:
    """The pixels stored turned 90° clockwise, with EXIF orientation 8 telling viewers to turn them back."""
    stored = img.transpose(Image.Transpose.ROTATE_270)  # 90° clockwise
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8  # "rotate 90° counter-clockwise to view"
    return encode(stored, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


def rgba_png() -> bytes:
    img = digit(32, mode="RGBA")
    alpha = Image.new("L", img.size, 0)
    ImageDraw.Draw(alpha).rectangle((4, 4, 27, 27), fill=255)
    img.putalpha(alpha)
    return encode(img)


def animated_gif() -> bytes:
    frames = [digit(32, str(i), "P") for i in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def jpeg_like(n: int) -> bytes:
    """n bytes that start like a JPEG (so only size can refuse them)."""
    return b"\xff\xd8\xff\xe0" + random_bytes(n - 4)


# --- the corpus ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    content_type: str | None
    status: int
    code: str | None = None  # expected error code (None for a 200)
    query: str = ""


def _valid(name: str, make: Callable[[], bytes], content_type: str | None = "image/png", query: str = "") -> Case:
    return Case(name, make, content_type, 200, None, query)


def _bad(name: str, make: Callable[[], bytes], content_type: str | None, error: contract.ApiError,
         query: str = "") -> Case:
    return Case(name, make, content_type, error.status, error.code, query)


GOOD_PNG = encode(digit())
_MB = 1024 * 1024

BAD_AND_ODD: tuple[Case, ...] = (
    # bodies that are not images
    _bad("empty-body", lambda: b"", "image/png", contract.EMPTY_BODY),
    _bad("empty-body-no-type", lambda: b"", None, contract.EMPTY_BODY),
    _bad("one-byte", lambda: b"\xff", "image/jpeg", contract.INVALID_IMAGE),
    _bad("one-byte-octet-stream", lambda: b"\x00", "application/octet-stream", contract.INVALID_IMAGE),
    _bad("text", lambda: b"hello, model", "text/plain", contract.UNSUPPORTED_MEDIA_TYPE),
    _bad("html", lambda: b"<!doctype html><html><body>cat</body></html>", "text/html",
         contract.UNSUPPORTED_MEDIA_TYPE),
    _bad("json", lambda: json.dumps({"image": "aGVsbG8="}).encode(), "application/json",
         contract.UNSUPPORTED_MEDIA_TYPE),
    _bad("pdf", lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "application/pdf",
         contract.UNSUPPORTED_MEDIA_TYPE),
    _bad("pdf-labelled-png", lambda: b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", "image/png", contract.INVALID_IMAGE),
    _bad("form-upload", lambda: b"--x\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nabc\r\n--x--\r\n",
         "multipart/form-data; boundary=x", contract.UNSUPPORTED_MEDIA_TYPE),
    _bad("svg", lambda: b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", contract.INVALID_IMAGE),
    _bad("random-bytes", lambda: random_bytes(4096), "application/octet-stream", contract.INVALID_IMAGE),
    _bad("random-bytes-as-jpeg", lambda: random_bytes(4096, seed=1), "image/jpeg", contract.INVALID_IMAGE),
    # broken images
    _bad("truncated-jpeg", lambda: (lambda b: b[: len(b) * 6 // 10])(encode(digit(64), "JPEG")), "image/jpeg",
         contract.INVALID_IMAGE),
    _bad("jpeg-header-only", lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg", contract.INVALID_IMAGE),
    _bad("png-signature-only", lambda: PNG_SIGNATURE, "image/png", contract.INVALID_IMAGE),
    _bad("corrupt-png-data", corrupt_png_data, "image/png", contract.INVALID_IMAGE),
    _bad("corrupt-png-crc", lambda: corrupt_png_data(valid_crc=False), "image/png", contract.INVALID_IMAGE),
    _bad("truncated-png", lambda: GOOD_PNG[: len(GOOD_PNG) // 2], "image/png", contract.INVALID_IMAGE),
    # images the model cannot take
    _bad("bomb-20000x20000-header", lambda: png_declaring(20000, 20000), "image/png", contract.UNPROCESSABLE_IMAGE),
    _bad("bomb-10000x10000-header", lambda: png_declaring(10000, 10000), "image/png", contract.UNPROCESSABLE_IMAGE),
    _bad("bomb-7000x7000-real", png_bomb, "image/png", contract.UNPROCESSABLE_IMAGE),
    _bad("absurd-strip-10000x10", lambda: encode(Image.new("L", (10000, 10), 128)), "image/png",
         contract.UNPROCESSABLE_IMAGE),
    # too large
    _bad("oversize-4.5MB", lambda: jpeg_like(4_500_000), "image/jpeg", contract.PAYLOAD_TOO_LARGE),
    _bad("oversize-5.5MB-lambda-event", lambda: jpeg_like(5_500_000), "image/jpeg", contract.PAYLOAD_TOO_LARGE),
    _bad("oversize-11MB-api-gateway", lambda: jpeg_like(11 * _MB), "image/jpeg", contract.PAYLOAD_TOO_LARGE),
    # real images with a wrong or missing type: API Gateway passes non-binary types as UTF-8 text
    _bad("png-as-text-plain", lambda: GOOD_PNG, "text/plain", contract.UNSUPPORTED_MEDIA_TYPE),
    _bad("png-without-content-type", lambda: GOOD_PNG, None, contract.UNSUPPORTED_MEDIA_TYPE),
    _valid("png-labelled-jpeg", lambda: GOOD_PNG, "image/jpeg"),
    _valid("jpeg-as-octet-stream", lambda: encode(digit(), "JPEG"), "application/octet-stream"),
    _valid("png-as-x-image", lambda: GOOD_PNG, "application/x-image"),
    _valid("png-with-parameters", lambda: GOOD_PNG, "Image/PNG; charset=binary"),
    # bad top_k
    _bad("top_k-zero", lambda: GOOD_PNG, "image/png", contract.INVALID_PARAMETER, "top_k=0"),
    _bad("top_k-negative", lambda: GOOD_PNG, "image/png", contract.INVALID_PARAMETER, "top_k=-1"),
    _bad("top_k-text", lambda: GOOD_PNG, "image/png", contract.INVALID_PARAMETER, "top_k=five"),
    _bad("top_k-float", lambda: GOOD_PNG, "image/png", contract.INVALID_PARAMETER, "top_k=1.5"),
    _bad("top_k-empty", lambda: GOOD_PNG, "image/png", contract.INVALID_PARAMETER, "top_k="),
    _bad("top_k-above-classes", lambda: GOOD_PNG, "image/png", contract.INVALID_PARAMETER, "top_k=11"),
    _bad("top_k-huge", lambda: GOOD_PNG, "image/png", contract.INVALID_PARAMETER, "top_k=99999999999999999999"),
    # odd but valid images
    _valid("grayscale", lambda: encode(digit(mode="L"))),
    _valid("palette", lambda: encode(digit(mode="P"))),
    _valid("rgba", rgba_png),
    _valid("grey-alpha", lambda: encode(digit(mode="LA"))),
    _valid("bilevel", lambda: encode(digit(mode="1"))),
    _valid("cmyk-jpeg", cmyk_jpeg, "image/jpeg"),
    _valid("png-16-bit", png16),
    _valid("exif-rotated-png", lambda: exif_rotated(digit())),
    _valid("exif-rotated-jpeg", lambda: exif_rotated(digit(), "JPEG"), "image/jpeg"),
    _valid("1x1", lambda: encode(Image.new("RGB", (1, 1), (200, 10, 10)))),
    _valid("wide-strip-1000x20", lambda: encode(digit(20).resize((1000, 20)))),
    _valid("tall-strip-20x1000", lambda: encode(digit(20).resize((20, 1000)))),
    _valid("large-jpeg-3000x2000", lambda: encode(digit(64).resize((3000, 2000)), "JPEG"), "image/jpeg"),
    _valid("progressive-jpeg", lambda: encode(digit(64), "JPEG", progressive=True), "image/jpeg"),
    _valid("gif-animated", animated_gif, "image/gif"),
    _valid("bmp", lambda: encode(digit(), "BMP"), "image/bmp"),
    _valid("tiff", lambda: encode(digit(), "TIFF"), "image/tiff"),
    _valid("webp", lambda: encode(digit(), "WEBP"), "image/webp"),
    _valid("top_k-1", lambda: GOOD_PNG, query="top_k=1"),
    _valid("top_k-all-classes", lambda: GOOD_PNG, query="top_k=10"),
)


# --- a model of our own, to test the toolkit's rules (no torch, instant model_fn) -------------------------------
TOY_INFERENCE = '''
import json, os, time

from sagemaker_inference.errors import BaseInferenceToolkitError

class Teapot(BaseInferenceToolkitError):  # the toolkit's own error class: its status reaches the client
    def __init__(self, message):
        super().__init__(418, message, "I'm a teapot")

class Kettle(Exception):  # a status_code attribute alone means nothing to the toolkit: a 500
    status_code = 418

def model_fn(model_dir, context):
    if os.environ.get("TOY_FAIL"):
        raise RuntimeError("weights are corrupt")
    time.sleep(float(os.environ.get("TOY_LOAD_S", "0")))
    return {"dir": model_dir, "context": type(context).__name__}

def input_fn(data, content_type):
    if data in (b"teapot", "teapot"):
        raise Teapot("short and stout")
    if data in (b"kettle", "kettle"):
        raise Kettle("whistles")
    if data in (b"boom", "boom"):
        raise ValueError("kaboom")
    return data, content_type

def predict_fn(data, model):
    return {"type": type(data[0]).__name__, "content_type": data[1], "context": model["context"]}

def output_fn(prediction, accept):
    return json.dumps({**prediction, "accept": accept})
'''


def write_toy_model(model_dir: Path) -> Path:
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "inference.py").write_text(TOY_INFERENCE)
    return model_dir


# --- HTTP --------------------------------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    reason: str = ""

    def json(self):
        return json.loads(self.body)


def http_request(port: int, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 60.0) -> Reply:
    """One request on a fresh connection; no Content-Type header at all when content_type is None."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        sent = dict(headers or {})
        if content_type is not None:
            sent["Content-Type"] = content_type
        if body is not None:
            sent["Content-Length"] = str(len(body))
        for key, value in sent.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read(),
                     response.reason)
    finally:
        conn.close()


def assert_error(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers.get("content-type", "").startswith(contract.JSON_CONTENT_TYPE)
    payload = reply.json()
    assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}, payload
    assert payload["error"]["code"] == code, payload
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    assert "Traceback" not in payload["error"]["message"]
    assert " at 0x" not in payload["error"]["message"], payload  # no memory address (issue 12 item 21)


def assert_toolkit_error(reply: Reply, error: contract.ApiError) -> None:
    """A contract error as the PyTorch inference DLC answers it (sagemaker_inference's Transformer.handle_error behind
    TorchServe's RestJob): the error's status with its code as the reason phrase, no Content-Type, and the body
    "<the contract's JSON error>\n<traceback>" (what InvokeEndpoint forwards as OriginalMessage)."""
    assert reply.status == error.status, (reply.status, reply.body[:300])
    assert reply.reason == error.code, reply.reason
    assert "content-type" not in reply.headers, reply.headers
    first, rest = reply.body.decode().split("\n", 1)
    payload = json.loads(first)
    assert set(payload) == {"error"} and payload["error"]["code"] == error.code, payload
    assert "Traceback" not in payload["error"]["message"] and " at 0x" not in payload["error"]["message"]
    assert rest.startswith("Traceback (most recent call last):"), rest[:200]


def assert_predictions(payload: dict, k: int, classes: list[str] | None = None) -> None:
    predictions = payload["predictions"]
    assert len(predictions) == k, predictions
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores) and sum(scores) <= 1.0 + 1e-9
    labels = [p["label"] for p in predictions]
    assert len(set(labels)) == k
    if classes is not None:
        assert set(labels) <= set(classes)


# --- a real model with random weights: the repository's own inference code, no training ------------------------
def write_random_model(model_dir: Path, classes: tuple[str, ...] = ("a", "b"), image_size: int = 32,
                       backbone: str = "resnet18", **config_overrides) -> Path:
    """A model directory as ml/train.py writes it (model.json, model.pt, code/), with untrained weights."""

    import torch

    from ml import imaging, model
    model_dir.mkdir(parents=True, exist_ok=True)
    net = model.build_model(backbone, len(classes), weights="none", finetune="all")
    torch.save(net.state_dict(), model_dir / contract.MODEL_WEIGHTS_FILE)
    config = {"backbone": backbone, "classes": list(classes), "training_job": "random-weights",
              "transforms": imaging.TransformSettings.for_size(image_size, "none").to_dict(), **config_overrides}
    (model_dir / contract.MODEL_CONFIG_FILE).write_text(json.dumps(config))
    write_model_code(model_dir)
    return model_dir


def write_model_code(model_dir: Path) -> Path:
    """<model>/code as ml/train.py writes it: the entry shim at the root, the `ml` package's modules under ml/."""
    code = model_dir / contract.MODEL_CODE_DIR
    (code / contract.PACKAGE).mkdir(parents=True, exist_ok=True)
    for name in contract.INFERENCE_MODULES:
        shutil.copy(ML_DIR / name, code / contract.PACKAGE / name)
    shutil.copy(ML_DIR / contract.ENTRY_DIR / contract.INFERENCE_PROGRAM, code / contract.INFERENCE_PROGRAM)
    return code
