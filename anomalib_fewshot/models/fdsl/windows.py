"""Geometry of FDSL's local-enhanced (LFE) branch: window positions, cutting and stitching.

The LFE branch scores windows of the image on their own. Windows of ``window`` cells move by ``stride`` cells
over a ``grid × grid`` token grid and must tile it exactly (13-cell windows with stride 2 on the 37-cell grid of
ViT-L/14 at 518 px). Cutting is two tensor unfolds; stitching averages overlapping windows with one transposed
convolution whose one-hot kernel puts channel ``(i, j)`` at tap ``(i, j)``, so the graph is static and exports to
OpenVINO.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anomalib_fewshot.errors import InvalidArgumentError


def window_offsets(grid: int, window: int, stride: int) -> int:
    """Number of window positions per side, checking that the windows tile the grid exactly."""
    if window > grid or (grid - window) % stride:
        msg = (
            f"LFE windows of {window} cells with stride {stride} do not tile a {grid}-cell grid: "
            "(grid - window_size) must be a non-negative multiple of window_stride"
        )
        raise InvalidArgumentError(msg)
    return (grid - window) // stride + 1


def stitch_kernel(window: int) -> torch.Tensor:
    """One-hot ``ConvTranspose2d`` kernel ``(window², 1, window, window)``: channel ``(i, j)`` → tap ``(i, j)``."""
    return torch.eye(window * window).reshape(window * window, 1, window, window)


class WindowGrid(nn.Module):
    """LFE windows of ``window`` cells, ``stride`` cells apart, on a ``grid``-cell token grid of ``patch``-px cells.

    The stitching kernel and overlap counts are non-persistent buffers: they follow the model's device and are
    never saved (they depend only on the constructor's arguments).

    Args:
        grid: token grid cells per side of the global image.
        window: window side in cells.
        stride: window stride in cells.
        patch: pixels per cell (the backbone's patch size or first-level stride).

    """

    def __init__(self, grid: int, window: int, stride: int, patch: int) -> None:
        super().__init__()
        self.grid, self.window, self.stride, self.patch = int(grid), int(window), int(stride), int(patch)
        self.per_side = window_offsets(self.grid, self.window, self.stride)
        weight = stitch_kernel(self.window)
        ones = torch.ones(1, self.window**2, self.per_side, self.per_side)
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("count", F.conv_transpose2d(ones, weight, stride=self.stride), persistent=False)

    def cut(self, images: torch.Tensor) -> torch.Tensor:
        """``(B·n², C, w, w)`` pixel windows of ``(B, C, S, S)`` images, row-major over window positions."""
        size, step = self.window * self.patch, self.stride * self.patch
        windows = images.unfold(2, size, step).unfold(3, size, step)  # (B, C, n, n, w, w)
        return windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, images.shape[1], size, size)

    def cut_cells(self, level: torch.Tensor) -> torch.Tensor:
        """``(B, n²·w², C)`` window tokens cut from a ``(B, C, g, g)`` map: window-major, row-major inside a window.

        The same order as encoding :meth:`cut`'s pixel windows and flattening their maps.
        """
        batch, channels = level.shape[:2]
        cells = level.unfold(2, self.window, self.stride).unfold(3, self.window, self.stride)  # (B, C, n, n, w, w)
        return cells.permute(0, 2, 3, 4, 5, 1).reshape(batch, -1, channels)

    def pool_cells(self, level: torch.Tensor) -> torch.Tensor:
        """``(B, n², C)`` mean of each window's cells of a ``(B, C, g, g)`` map, row-major over window positions."""
        cells = level.unfold(2, self.window, self.stride).unfold(3, self.window, self.stride)  # (B, C, n, n, w, w)
        return cells.mean(dim=(-2, -1)).flatten(2).transpose(1, 2)

    def stitch(self, window_values: torch.Tensor) -> torch.Tensor:
        """Average overlapping per-token window values ``(B, n²·w², C)`` into a ``(B, C, g, g)`` map."""
        batch, channels = window_values.shape[0], window_values.shape[-1]
        n, area = self.per_side, self.window**2
        per_window = window_values.reshape(batch, n * n, area, channels).permute(0, 3, 2, 1)  # (B, C, w², n²)
        stacked = per_window.reshape(batch * channels, area, n, n)
        summed = F.conv_transpose2d(stacked, self.weight, stride=self.stride)
        return summed.reshape(batch, channels, self.grid, self.grid) / self.count
