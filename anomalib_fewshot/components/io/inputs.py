"""Input checks of the models, in pure torch (no Lightning): the eager guard every entry point shares.

:mod:`anomalib_fewshot.deploy` uses it without importing Lightning; the models call it from their ``forward``.
"""

from __future__ import annotations

from typing import Any

import torch

from anomalib_fewshot.errors import AnomalibFewshotError

#: Tolerance of the ``[0, 1]`` range check (resampling can move values by rounding errors).
RANGE_TOLERANCE = 1e-3


class InputImageError(AnomalibFewshotError, ValueError):
    """An input tensor the models cannot score (wrong shape or dtype, NaN/inf, values outside ``[0, 1]``)."""


def _in_graph_capture() -> bool:
    """True while torch traces or exports the model: data-dependent checks cannot live in a static graph."""
    return bool(
        torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    )


def check_input_images(images: Any, where: str = "input") -> None:
    """Reject images the models cannot score, with a message that says what is wrong and what to do.

    Eager code only (skipped while tracing or exporting). Accepts ``(B, 3, H, W)`` floating-point tensors with
    finite values in ``[0, 1]`` (anomalib's datamodules and inferencers produce exactly that).

    Raises:
        InputImageError: naming ``where``, the offending batch indices and the fix.

    """
    if _in_graph_capture():
        return
    if not isinstance(images, torch.Tensor):
        msg = f"{where}: expected a (B, 3, H, W) float tensor, got {type(images).__name__}"
        raise InputImageError(msg)
    if images.ndim != 4 or images.shape[1] != 3:
        msg = (
            f"{where}: expected shape (B, 3, H, W), got {tuple(images.shape)}; convert grayscale/RGBA images to "
            "RGB first (anomalib_fewshot.deploy.load_image_safely does it)"
        )
        raise InputImageError(msg)
    if not images.is_floating_point():
        msg = f"{where}: expected float images in [0, 1], got dtype {images.dtype}; use images.float() / 255"
        raise InputImageError(msg)
    if images.numel() == 0:
        msg = f"{where}: empty image batch {tuple(images.shape)}"
        raise InputImageError(msg)
    finite = torch.isfinite(images).flatten(1).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        msg = f"{where}: image(s) at batch index {bad} contain NaN or inf values; drop or repair them before scoring"
        raise InputImageError(msg)
    low, high = (float(v) for v in torch.aminmax(images))
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        msg = (
            f"{where}: pixel values span [{low:.4g}, {high:.4g}], the models expect RGB floats in [0, 1] "
            "(divide 8-bit images by 255 and 16-bit images by 65535)"
        )
        raise InputImageError(msg)
