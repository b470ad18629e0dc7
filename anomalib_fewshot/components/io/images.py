"""Safe image reading: every file a camera or a file share may produce becomes an RGB float image or a clear error.

Anomalib's ``read_image`` is ``Image.open(path).convert("RGB")``: grayscale and RGBA convert fine, but a 16-bit
PNG (PIL mode ``I;16``/``I``) is clipped to 255 (an almost white image), and a zero-byte, truncated or non-image
file raises a PIL error deep inside a data loader. :func:`read_image` handles those cases; :func:`check_image`
and :func:`scan_images` report problems without raising, so a list of files can be checked at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2.functional import to_dtype

from anomalib_fewshot.errors import AnomalibFewshotError

#: Images with more pixels than this are refused by PIL's decompression-bomb check; 5000x4000 camera frames
#: (20 MP) stay well below it.
MAX_PIXELS = 20_000 * 20_000


class ImageReadError(AnomalibFewshotError, ValueError):
    """An image file that cannot be used (missing, empty, truncated, not an image, unsupported mode)."""


def _problem(path: Path, exc: Exception | None = None, reason: str | None = None) -> str:
    detail = reason if reason is not None else f"{type(exc).__name__}: {exc}"
    return f"'{path}': {detail}"


def _open_verified(path: Path) -> Image.Image:
    """Open ``path`` with PIL, verify its structure and decode its pixels (raises ``ImageReadError``)."""
    if not path.is_file():
        raise ImageReadError(_problem(path, reason="file not found"))
    if path.stat().st_size == 0:
        raise ImageReadError(_problem(path, reason="file is empty (0 bytes); re-copy it or remove it"))
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as probe:
            probe.verify()  # structure and checksums, without decoding
        image = Image.open(path)
        image.load()  # decodes: catches truncated pixel data
    except UnidentifiedImageError as exc:
        raise ImageReadError(_problem(path, reason="not an image file PIL can read (wrong extension?)")) from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(_problem(path, reason=f"corrupt or truncated image ({exc}); re-copy it")) from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return image


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """``(H, W, 3)`` float32 in ``[0, 1]`` from any PIL image: 1/8/16/32-bit grey, palette, RGB(A), CMYK, LA.

    16-bit and 32-bit integer images are scaled by their type's range (``I;16``: 65535), float images (``F``)
    are clipped to ``[0, 1]``; alpha is dropped (the camera's colour values are kept as they are).
    """
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        array = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if mode.startswith("I;16") or array.max(initial=0) <= 65535 else float(2**32 - 1)
        grey = np.clip(array / scale, 0.0, 1.0).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _high_bit_depth(image: Image.Image) -> bool:
    return image.mode.startswith("I;16") or image.mode in ("I", "F")


def to_rgb_tensor(image: Image.Image) -> torch.Tensor:
    """``(3, H, W)`` float32 in ``[0, 1]``; 8-bit images give exactly what anomalib's ``read_image`` gives."""
    if _high_bit_depth(image):
        return torch.from_numpy(np.ascontiguousarray(to_rgb_array(image))).permute(2, 0, 1).contiguous()
    rgb = torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).contiguous()
    return to_dtype(rgb, torch.float32, scale=True)


def read_image(path: str | Path, max_side: int | None = None) -> torch.Tensor:
    """Read ``path`` as a ``(3, H, W)`` float32 tensor in ``[0, 1]``.

    Args:
        path: image file (any format PIL reads; grayscale, RGBA and 16-bit are converted).
        max_side: when given, an image whose longer side exceeds it is shrunk (aspect kept, antialiased) so
            that a 5000x4000 frame does not cost gigabytes downstream.

    Raises:
        ImageReadError: the file is missing, empty, truncated, not an image, or decodes to non-finite values.

    """
    path = Path(path)
    image = _open_verified(path)
    resize_to = None
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        resize_to = (max(1, round(image.height * scale)), max(1, round(image.width * scale)))
        if not _high_bit_depth(image):  # 8-bit: shrink before converting
            image = image.resize(resize_to[::-1], Image.Resampling.LANCZOS, reducing_gap=2.0)
            resize_to = None
    tensor = to_rgb_tensor(image)
    if not torch.isfinite(tensor).all():
        raise ImageReadError(_problem(path, reason="decodes to NaN/inf pixel values"))
    if resize_to is not None:  # high bit depth: shrink the float image
        tensor = torch.nn.functional.interpolate(tensor[None], size=resize_to, mode="bilinear", antialias=True)[0]
        tensor = tensor.clamp(0.0, 1.0)
    return tensor


def read_preview(path: str | Path, max_side: int | None = None) -> Image.Image:
    """Read ``path`` as an 8-bit RGB PIL image for display (heat-map overlays), through :func:`read_image`.

    A 16-bit image keeps its grey levels (PIL's ``convert("RGB")`` would show it white).
    """
    array = read_image(path, max_side).permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
    return Image.fromarray(array)


def check_image(path: str | Path) -> str | None:
    """``None`` if ``path`` is a readable image, else a one-line description of the problem (naming the file)."""
    try:
        _open_verified(Path(path)).close()
    except ImageReadError as exc:
        return str(exc)
    return None


def scan_images(paths: Iterable[str | Path]) -> list[str]:
    """Check every file in ``paths``; return the problems found (empty when all are readable)."""
    return [problem for problem in (check_image(p) for p in paths) if problem is not None]
