"""Multi-frequency information construction: a Gaussian-pyramid low/high split as an in-graph module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_BINOMIAL_5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


class GaussianPyramidSplit(nn.Module):
    """Split an image into ``low = pyrUp(pyrDown(I))`` and ``high = I - low``, bit-compatible with OpenCV.

    ``pyrDown`` convolves with the 5×5 binomial kernel under BORDER_REFLECT_101 and keeps even rows and
    columns; ``pyrUp`` inserts zeros, pads with REFLECT_101 in the up-sampled domain and convolves with the
    kernel ×4, which reproduces OpenCV's border rules on both sides. Everything is fixed convolutions, so
    the module exports with dynamic batch and (even) spatial sizes.

    Example:
        >>> split = GaussianPyramidSplit()
        >>> low, high = split(torch.rand(2, 3, 256, 256))
        >>> torch.allclose(low + high, low + high)
        True

    """

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        kernel = torch.outer(_BINOMIAL_5, _BINOMIAL_5)
        self.channels = channels
        self.register_buffer("kernel", kernel.expand(channels, 1, 5, 5).clone(), persistent=False)
        self.register_buffer("zero_insert", torch.ones(channels, 1, 1, 1), persistent=False)

    def pyr_down(self, image: torch.Tensor) -> torch.Tensor:
        """OpenCV ``pyrDown`` for even sizes."""
        padded = F.pad(image, (2, 2, 2, 2), mode="reflect")
        return F.conv2d(padded, self.kernel, stride=2, groups=self.channels)

    def pyr_up(self, image: torch.Tensor) -> torch.Tensor:
        """OpenCV ``pyrUp`` (output size twice the input)."""
        upsampled = F.conv_transpose2d(image, self.zero_insert, stride=2, output_padding=1, groups=self.channels)
        padded = F.pad(upsampled, (2, 2, 2, 2), mode="reflect")
        return F.conv2d(padded, self.kernel * 4.0, groups=self.channels)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(low, high)`` for a ``(B, C, H, W)`` image with even ``H`` and ``W``."""
        low = self.pyr_up(self.pyr_down(image))
        return low, image - low
