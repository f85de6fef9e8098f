"""Image decoding and transforms: the one copy that training and serving both use."""

from __future__ import annotations

import ctypes
import io
import math
import re
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageMode, UnidentifiedImageError

from ml import contract
from ml.contract import ApiException

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("flip-crop", "crop", "none")
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class TransformSettings:
    """Saved in model.json so serving reproduces training's evaluation transform exactly."""

    image_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    augment: str = "flip-crop"

    @classmethod
    def for_size(cls, image_size: int, augment: str = "flip-crop") -> TransformSettings:
        # Small inputs (the local digits) are already framed: no centre crop that would cut them.
        resize = image_size if image_size < 64 else round(image_size * 256 / 224)
        return cls(image_size=image_size, resize_size=resize, augment=augment)

    @classmethod
    def from_dict(cls, data: dict) -> TransformSettings:
        """model.json's "transforms", checked: a value no model could be served with is a ValueError naming it
        (at load time, not as an error on every request)."""
        if not isinstance(data, dict):
            raise ValueError(f"transforms must be an object, not {type(data).__name__}")
        top = contract.MAX_MODEL_IMAGE_SIZE

        def side(name: str) -> int:
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise ValueError(f"transforms.{name} must be a whole number from 1 to {top}, not {value!r}")
            return value

        def triple(name: str, positive: bool) -> tuple[float, float, float]:
            value = data.get(name)
            ok = isinstance(value, list | tuple) and len(value) == 3 and all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
                for v in value)
            if not ok or value is None:
                raise ValueError(f"transforms.{name} must be 3 finite{' positive' if positive else ''} numbers, "
                                 f"not {value!r}")
            return (float(value[0]), float(value[1]), float(value[2]))

        image_size, resize_size = side("image_size"), side("resize_size")
        if resize_size < image_size:
            raise ValueError(f"transforms.resize_size {resize_size} is below image_size {image_size}")
        augment = data.get("augment", "flip-crop")
        if augment not in AUGMENTATIONS:
            raise ValueError(f"transforms.augment must be one of {', '.join(AUGMENTATIONS)}, not {augment!r}")
        return cls(image_size=image_size, resize_size=resize_size, mean=triple("mean", False),
                   std=triple("std", True), augment=augment)

    def to_dict(self) -> dict:
        return asdict(self)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of clipping to white (float32, in place: the
        # image is already reduced, and this is the one copy).
        arr = np.array(img, dtype=np.float32)
        top = 65535.0 if (img.mode.startswith("I") and arr.max(initial=0) > 255) else 255.0
        if img.mode == "F":
            arr[~np.isfinite(arr)] = 0.0
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr -= lo
            top = max(hi - lo, 1e-12)
        arr *= 255.0 / top
        img = Image.fromarray(np.clip(arr, 0, 255, out=arr).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Composite transparency over white, as a viewer would show it (not black).
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


# Modes whose pixels Image.reduce cannot average (palette indices, bits, 16-bit), and what they become first.
_BEFORE_REDUCE = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}
# Whole-factor box reduction while the image stays at least this many times the side the transform resizes to
# (Pillow's own `reducing_gap` idea: the final resize then looks as if made from the full image).
REDUCING_GAP = 2.0
_PREMULTIPLIED = ("LA", "RGBA")  # Image.reduce averages these as La/RGBa: one more full-size copy
# EXIF orientation -> the transposition that shows the image upright (what ImageOps.exif_transpose applies).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_TRIM_ABOVE_BYTES = 8 * 1024 * 1024


def held_bytes(mode: str, width: int, height: int) -> int:
    """Bytes Pillow holds for an image: 1, 2 or 4 per pixel with one band, 4 with several 8-bit bands (RGB is
    stored as RGBX)."""
    try:
        desc = ImageMode.getmode(mode)
        item = int(desc.typestr[-1])
    except (KeyError, AttributeError, ValueError):  # a mode this Pillow does not describe: count the most
        return width * height * 4
    return width * height * (4 if len(desc.bands) > 1 else item)


def decode_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """Bytes -> upright RGB image, refusing what is not a bounded raster image.

    `min_side` (the side the transform resizes to) lets JPEG decode at a reduced scale and any image be reduced
    by a whole factor right after decoding, so conversions run on the small image. Bounded by
    contract.MAX_IMAGE_PIXELS, MAX_ASPECT_RATIO and MAX_DECODED_BYTES, checked before decoding; the memory of a
    large decode goes back to the system afterwards. Raises ApiException (400 undecodable/truncated, 422 over a
    budget or absurd shape).
    """
    held = [0]
    try:
        return _decode(data, min_side, held)
    finally:
        if held[0] > _TRIM_ABOVE_BYTES:
            release_memory()


def _decode(data: bytes, min_side: int | None, held: list[int]) -> Image.Image:
    if not data:
        raise ApiException(contract.EMPTY_BODY, "the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=contract.IMAGE_FORMATS)
            width, height = img.size
            if width < 1 or height < 1:
                raise ApiException(contract.UNPROCESSABLE_IMAGE, f"the image has no pixels ({width}x{height})")
            if width * height > contract.MAX_IMAGE_PIXELS:
                raise ApiException(
                    contract.UNPROCESSABLE_IMAGE,
                    f"the image is {width}x{height} pixels; the limit is {contract.MAX_IMAGE_PIXELS:,} pixels",
                )
            if max(width, height) / min(width, height) > contract.MAX_ASPECT_RATIO:
                raise ApiException(
                    contract.UNPROCESSABLE_IMAGE,
                    f"the image is {width}x{height}: aspect ratio above {contract.MAX_ASPECT_RATIO:g}:1",
                )
            if min_side and img.format == "JPEG":
                scale = min(width, height) / min_side
                if scale >= 2:
                    img.draft("RGB", (int(width / scale) + 1, int(height / scale) + 1))  # decodes at 1/2..1/8
            width, height = img.size
            before_reduce = _BEFORE_REDUCE.get(img.mode)
            factor = int(min(width, height) / (min_side * REDUCING_GAP)) if min_side else 1
            # Every full-size copy held at once: the decoded pixels, the mode a reduce needs, and the premultiplied
            # copy Image.reduce makes of an image with alpha.
            copies = [img.mode, *([before_reduce] if before_reduce else [])]
            if factor >= 2 and copies[-1] in _PREMULTIPLIED:
                copies.append(copies[-1])
            held[0] = sum(held_bytes(mode, width, height) for mode in copies)
            if held[0] > contract.MAX_DECODED_BYTES:
                raise ApiException(
                    contract.UNPROCESSABLE_IMAGE,
                    f"the image ({width}x{height}, mode {img.mode}) needs {held[0] / 2**20:,.0f} MiB to decode; "
                    f"the limit is {contract.MAX_DECODED_BYTES / 2**20:,.0f} MiB",
                )
            orientation = img.getexif().get(EXIF_ORIENTATION)
            img.load()
            if factor >= 2:
                if before_reduce:
                    img = img.convert(before_reduce)
                img = img.reduce(factor)
            if orientation in _UPRIGHT:
                img = img.transpose(_UPRIGHT[orientation])
            return _to_rgb(img)
    except ApiException:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ApiException(contract.UNPROCESSABLE_IMAGE, f"the image is too large to decode safely: {exc}") from None
    except MemoryError:
        raise ApiException(contract.UNPROCESSABLE_IMAGE, "the image is too large to decode") from None
    except Exception as exc:  # a malformed file can raise nearly anything inside a Pillow plugin
        # (OSError, SyntaxError, struct.error, KeyError, ZeroDivisionError...): it is the sender's file, not our fault.
        raise ApiException(contract.INVALID_IMAGE, f"the image could not be decoded: {_short(exc)}") from None


def release_memory() -> None:
    """Give freed heap memory back to the system (glibc keeps large freed blocks otherwise: an endpoint that
    decoded a few big images would stay at its peak). A no-op where malloc_trim does not exist."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _find_malloc_trim()


# Pillow names the stream it could not read by its repr ("<_io.BytesIO object at 0x7f...>"): a memory address,
# which a client must never see.
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(_OBJECT_REPR.sub("the data", str(exc)).split()) or type(exc).__name__
    if isinstance(exc, UnidentifiedImageError):
        text = f"not a {'/'.join(contract.IMAGE_FORMATS)} image Pillow can read"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_transforms(settings: TransformSettings):
    """(train, eval) torchvision transforms of PIL RGB images -> normalised tensors."""
    from torchvision import transforms as T

    normalize = [T.ToTensor(), T.Normalize(settings.mean, settings.std)]
    eval_tf = T.Compose([T.Resize(settings.resize_size), T.CenterCrop(settings.image_size), *normalize])
    if settings.augment == "none":
        return eval_tf, eval_tf
    train_steps = [T.RandomResizedCrop(settings.image_size, scale=(0.6, 1.0), ratio=(0.85, 1.18))]
    if settings.augment == "flip-crop":
        train_steps.append(T.RandomHorizontalFlip())
    return T.Compose([*train_steps, *normalize]), eval_tf
