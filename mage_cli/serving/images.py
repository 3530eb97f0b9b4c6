"""Images a client sends: data URLs, uploaded files and local paths under an allowed folder, all checked the same way.

Every failure is a :class:`~mage_cli.serving.errors.RequestError` with an HTTP status and one readable line: not base64, not an
image, corrupt, more pixels than the limit (checked from the header, before the pixels are decoded), a path outside
the allowed folder (resolved with `tool_use.media.confine`, so `..`, absolute paths and symlinks cannot escape).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from tool_use.media import PathNotAllowedError, confine

from .errors import RequestError

DEFAULT_MAX_IMAGE_PIXELS = 25_000_000  # 25 MP: a 5000×5000 photo; LLaVA resizes to 336² anyway
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024


def decode_image(data: bytes, *, what: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Any:
    """Bytes → an RGB `PIL.Image`, fully decoded, or a 400 `RequestError` naming `what` and the problem."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(
            400,
            f"{what} has more pixels than PIL opens safely; this server takes at most {max_pixels:,}",
            code="image_too_large",
        ) from None
    except UnidentifiedImageError:
        raise RequestError(400, f"{what} is not an image PIL can read", code="invalid_image") from None
    except Exception as error:  # noqa: BLE001 (a broken header can raise almost anything inside a plugin)
        raise RequestError(
            400, f"{what} is not a readable image ({type(error).__name__})", code="invalid_image"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise RequestError(
            400,
            f"{what} has {width}x{height} = {width * height:,} pixels; this server takes at most {max_pixels:,}",
            code="image_too_large",
        )
    if width < 1 or height < 1:
        raise RequestError(400, f"{what} is empty ({width}x{height})", code="invalid_image")
    try:
        image.load()
        return image.convert("RGB")
    except Exception as error:  # noqa: BLE001 (truncated/corrupt data: OSError, SyntaxError, zlib errors, ...)
        raise RequestError(400, f"{what} is corrupt: {error}", code="invalid_image") from None


def image_from_data_url(url: str, *, what: str, max_pixels: int, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> Any:
    """``data:image/...;base64,...`` → a checked RGB image."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise RequestError(
            400, f"{what}: a data URL must look like data:image/png;base64,...", code="invalid_image_url"
        )
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise RequestError(400, f"{what} is larger than {max_bytes:,} bytes", code="image_too_large")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, f"{what}: the data URL is not valid base64", code="invalid_image_url") from None
    return decode_image(data, what=what, max_pixels=max_pixels)


def image_from_path(
    name: str, image_dir: Path | None, *, what: str, max_pixels: int, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> Any:
    """A local file under `image_dir` (``file://`` prefix allowed) → a checked RGB image; 403 outside it."""
    if image_dir is None:
        raise RequestError(
            403,
            f"{what}: local paths are refused (the server was started without --image-dir)",
            code="path_not_allowed",
        )
    if name.startswith("file://"):
        name = name[len("file://") :]
    try:
        path = confine(name, [image_dir])
    except PathNotAllowedError:
        raise RequestError(403, f"{what}: {name!r} is outside the allowed folder", code="path_not_allowed") from None
    except FileNotFoundError:
        raise RequestError(
            400, f"{what}: {name!r} is not a file in the allowed folder", code="file_not_found"
        ) from None
    if path.stat().st_size > max_bytes:
        raise RequestError(400, f"{what} is larger than {max_bytes:,} bytes", code="image_too_large")
    return decode_image(path.read_bytes(), what=what, max_pixels=max_pixels)


def image_from_url(url: Any, image_dir: Path | None, *, what: str, max_pixels: int) -> Any:
    """An OpenAI ``image_url.url``: a data URL or a local path (remote URLs are not fetched: 400)."""
    if not isinstance(url, str) or not url.strip():
        raise RequestError(400, f"{what}: image_url.url must be a non-empty string", code="invalid_image_url")
    url = url.strip()
    if url.startswith("data:"):
        return image_from_data_url(url, what=what, max_pixels=max_pixels)
    if url.startswith(("http://", "https://")):
        raise RequestError(
            400,
            f"{what}: remote URLs are not fetched; send a data URL or a path under --image-dir",
            code="invalid_image_url",
        )
    return image_from_path(url, image_dir, what=what, max_pixels=max_pixels)


__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "decode_image", "image_from_data_url", "image_from_path", "image_from_url"]
