"""Image decoding and transforms: the one copy that training and serving both use."""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageOps

import contract
from contract import ApiException

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("flip-crop", "crop", "none")


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
        return cls(
            image_size=int(data["image_size"]),
            resize_size=int(data["resize_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            augment=data.get("augment", "flip-crop"),
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float greyscale: scale to 8 bits instead of clipping to white.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if (img.mode.startswith("I") and arr.max(initial=0) > 255) else 255.0
        if img.mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr, top = arr - lo, max(hi - lo, 1e-12)
        img = Image.fromarray(np.clip(arr * 255.0 / top, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Composite transparency over white, as a viewer would show it (not black).
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def decode_image(data: bytes, min_side: int | None = None) -> Image.Image:
    """Bytes -> upright RGB image, refusing what is not a bounded raster image.

    `min_side` lets JPEG decode at a reduced scale that still covers the model's input size.
    Raises ApiException (400 undecodable/truncated, 422 over the pixel budget or absurd shape).
    """
    if not data:
        raise ApiException(contract.EMPTY_BODY, "the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=contract.IMAGE_FORMATS)
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
                    img.draft("RGB", (int(width / scale) + 1, int(height / scale) + 1))
            img.load()
            img = ImageOps.exif_transpose(img) or img
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


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
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
