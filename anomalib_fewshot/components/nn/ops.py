"""Export-safe tensor operations (static graphs for torch.export, ONNX and OpenVINO)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def adaptive_avg_pool_matrix(in_features: int, out_features: int) -> torch.Tensor:
    """Return the ``(in_features, out_features)`` matrix ``P`` with ``x @ P == adaptive_avg_pool1d(x, out)``.

    ``torch.nn.functional.adaptive_avg_pool1d`` averages the input window
    ``[floor(i * n / m), ceil((i + 1) * n / m))`` for output ``i``; this builds the same windows as a fixed
    linear map, which exports as a single MatMul for any pair of sizes (including up-sampling, ``m > n``).
    """
    matrix = torch.zeros(in_features, out_features)
    for i in range(out_features):
        start = (i * in_features) // out_features
        end = -((-(i + 1) * in_features) // out_features)
        matrix[start:end, i] = 1.0 / (end - start)
    return matrix


def pool_last_dim(x: torch.Tensor, out_features: int, matrix: torch.Tensor | None = None) -> torch.Tensor:
    """Adaptive average pooling over the last dimension, exactly as ``adaptive_avg_pool1d``.

    Uses reshape + mean when the size divides evenly (the common, cheap case) and otherwise the pooling
    ``matrix`` from :func:`adaptive_avg_pool_matrix` (pass it as a registered buffer to keep the graph static).
    """
    in_features = x.shape[-1]
    if in_features == out_features:
        return x
    if in_features % out_features == 0:
        return x.reshape(*x.shape[:-1], out_features, in_features // out_features).mean(-1)
    if matrix is None:
        matrix = adaptive_avg_pool_matrix(in_features, out_features).to(x)
    return x @ matrix


def symmetric_pad2d(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last two dimensions by mirroring *including* the edge sample (SciPy ``mode="reflect"``).

    ``torch.nn.functional.pad(mode="reflect")`` excludes the edge (OpenCV's REFLECT_101); SciPy's ``reflect``
    repeats it. Built from flips and concatenation so that it exports. Requires ``pad <= H, W``.
    """
    if pad == 0:
        return x
    top = x[..., :pad, :].flip(-2)
    bottom = x[..., -pad:, :].flip(-2)
    x = torch.cat([top, x, bottom], dim=-2)
    left = x[..., :pad].flip(-1)
    right = x[..., -pad:].flip(-1)
    return torch.cat([left, x, right], dim=-1)


def local_patch_features(feature_map: torch.Tensor, patch_size: int = 3) -> torch.Tensor:
    """Unfold ``patch_size``² neighbourhoods (stride 1, same padding) into channels, C-major.

    Args:
        feature_map: ``(B, C, H, W)``.
        patch_size: neighbourhood size (odd).

    Returns:
        ``(B, C * patch_size**2, H, W)`` where channel ``c * p**2 + j`` is channel ``c`` at neighbour ``j``.

    """
    batch, channels, height, width = feature_map.shape
    padding = (patch_size - 1) // 2
    unfolded = F.unfold(feature_map, kernel_size=patch_size, padding=padding, stride=1)
    return unfolded.reshape(batch, channels * patch_size * patch_size, height, width)
