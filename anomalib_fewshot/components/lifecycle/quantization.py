"""INT8 post-training quantisation of an exported OpenVINO model, calibrated on the shots only.

Anomalib's ``INT8_PTQ`` step calibrates on the datamodule's *validation* loader, which is the test split by default;
a few-shot model has only its shots to spare. A fit stores its shots (at most :data:`MAX_CALIBRATION_SHOTS`, in the
model's geometry, as 8-bit images) in the checkpoint, so a checkpoint alone can be quantised on another machine
where the shot files do not exist. The calibration set is those shots and seeded normal views of them
(:func:`~anomalib_fewshot.components.anomalies.normal_views`: small shifts and brightness/contrast jitter); no test
or development image is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from anomalib_fewshot.components.anomalies import normal_views
from anomalib_fewshot.errors import InvalidArgumentError

#: Checkpoint key of the stored calibration images (``(n, 3, S, S)`` uint8).
CALIBRATION_KEY = "anomalib_fewshot_calibration"
#: Most shots stored for calibration (a full-shot fit stores its first ones): 8 x 3 x 256² bytes = 1.5 MiB.
MAX_CALIBRATION_SHOTS = 8
#: Calibration samples drawn by default (the shots and normal views of them).
DEFAULT_CALIBRATION_SIZE = 32
#: What is quantised (everything else stays in floating point):
#: ``all``: NNCF's default for the model type; ``no_matmul``: the same but every MatMul (feature distances,
#: attention, MLP heads) in floating point; ``convolutions``: only the feature convolutions. In every scope a
#: convolution with one output channel (the smoothing of an anomaly map) stays in floating point.
SCOPES = ("all", "no_matmul", "convolutions")
#: The scope of a model that names none (anomalib's baselines, PCSNet, DFD, ED): the development screen
#: (docs/benchmarks/int8_dev, 2026-12-03) lost the least accuracy with it for Patchcore, PCSNet and DFD; NNCF's
#: default quantises distances and heads and loses 0.17-0.59 AUPRO there.
DEFAULT_SCOPE = "convolutions"
_FEATURE_CONVOLUTIONS = ("Convolution", "GroupConvolution")


def ignored_scope(model: Any, scope: str) -> Any:
    """NNCF's ``IgnoredScope`` of ``scope`` (one of :data:`SCOPES`) for an OpenVINO ``model``."""
    import nncf

    if scope not in SCOPES:
        msg = f"quantization scope {scope!r}: expected one of {', '.join(SCOPES)}"
        raise InvalidArgumentError(msg)
    ops = list(model.get_ops())
    smoothing = [
        op.get_friendly_name()
        for op in ops
        if op.get_type_name() == "Convolution" and op.get_output_partial_shape(0)[1].get_length() == 1
    ]
    types: list[str] = []
    if scope == "no_matmul":
        types = ["MatMul"]
    elif scope == "convolutions":
        types = sorted({op.get_type_name() for op in ops} - set(_FEATURE_CONVOLUTIONS))
    return nncf.IgnoredScope(names=smoothing, types=types, validate=False)


def pack_shots(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """The first :data:`MAX_CALIBRATION_SHOTS` ``(3, S, S)`` images in ``[0, 1]`` as one uint8 tensor."""
    kept = [image.detach().float().cpu().clamp(0, 1) for image in list(images)[:MAX_CALIBRATION_SHOTS]]
    return (torch.stack(kept) * 255).round().to(torch.uint8)


def calibration_images(packed: torch.Tensor, count: int = DEFAULT_CALIBRATION_SIZE, seed: int = 0) -> torch.Tensor:
    """``count`` float images ``(count, 3, S, S)``: the stored shots, then normal views of them (seeded)."""
    shots = packed.float() / 255
    if count <= len(shots):
        return shots[:count]
    per_shot = -(-(count - len(shots)) // len(shots))
    max_shift = 0.02 * float(shots.shape[-1])  # a few pixels: normal placement variation
    views = normal_views(list(shots), per_shot, max_shift=max_shift, jitter=0.1, seed=seed)
    return torch.cat([shots, views])[:count]


def quantize_on_shots(
    model: Any,
    packed: torch.Tensor | None,
    model_type: str | None = None,
    count: int = DEFAULT_CALIBRATION_SIZE,
    scope: str = DEFAULT_SCOPE,
) -> Any:
    """NNCF INT8 post-training quantisation of an OpenVINO ``model`` on the stored shots (see the module docstring).

    Args:
        model: the converted ``openvino.Model`` (input ``(B, 3, H, W)`` floats in ``[0, 1]``).
        packed: the checkpoint's stored shots (:func:`pack_shots`); ``None`` is a clear error.
        model_type: ``"transformer"`` for attention models (NNCF keeps their sensitive operations in floating point).
        count: calibration samples.
        scope: what is quantised (:data:`SCOPES`).

    Raises:
        InvalidArgumentError: the model has no stored shots (a checkpoint written before they were stored, or a
            model that was never fitted).

    """
    import nncf

    if packed is None or len(packed) == 0:
        msg = (
            "INT8 quantisation calibrates on the shots stored by the fit, and this model has none (fitted before "
            "anomalib_fewshot stored them, or never fitted): fit it again, then export with int8_ptq"
        )
        raise InvalidArgumentError(msg)
    images = calibration_images(packed, count)
    shape = model.input(0).partial_shape
    size = (shape[2].get_length(), shape[3].get_length()) if shape[2].is_static and shape[3].is_static else None
    if size is not None and tuple(images.shape[-2:]) != size:
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    batch = shape[0].get_length() if shape[0].is_static else 1
    samples = [np.repeat(image[None].numpy(), batch, axis=0) for image in images]
    kwargs: dict[str, Any] = {"subset_size": len(samples), "ignored_scope": ignored_scope(model, scope)}
    if model_type == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    return nncf.quantize(model, nncf.Dataset(samples), **kwargs)
