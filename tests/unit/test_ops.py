from __future__ import annotations

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from anomalib_fewshot.components.nn.features import LocalAggregation
from anomalib_fewshot.components.nn.frequency import GaussianPyramidSplit
from anomalib_fewshot.components.nn.ops import adaptive_avg_pool_matrix, pool_last_dim, symmetric_pad2d
from anomalib_fewshot.components.nn.scoring import BranchNormalizer, GaussianSmoothing


@pytest.mark.parametrize(("height", "width"), [(64, 64), (48, 80), (256, 256)])
def test_pyramid_split_matches_opencv(height, width):
    rng = np.random.default_rng(0)
    image = rng.random((height, width, 3), dtype=np.float32)
    low_cv = cv2.pyrUp(cv2.pyrDown(image))
    high_cv = cv2.subtract(image, low_cv)
    low, high = GaussianPyramidSplit()(torch.from_numpy(image).permute(2, 0, 1)[None])
    np.testing.assert_allclose(low[0].permute(1, 2, 0).numpy(), low_cv, atol=1e-5)
    np.testing.assert_allclose(high[0].permute(1, 2, 0).numpy(), high_cv, atol=1e-5)


@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_smoothing_matches_scipy(sigma):
    rng = np.random.default_rng(1)
    image = rng.random((40, 56), dtype=np.float32)
    ours = GaussianSmoothing(sigma)(torch.from_numpy(image)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(ours, ndi.gaussian_filter(image, sigma), atol=1e-5)


def test_smoothing_zero_sigma_is_identity():
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(GaussianSmoothing(0)(x), x)


def test_symmetric_pad_matches_numpy():
    x = torch.arange(20.0).reshape(1, 1, 4, 5)
    expected = np.pad(x[0, 0].numpy(), 2, mode="symmetric")
    np.testing.assert_array_equal(symmetric_pad2d(x, 2)[0, 0].numpy(), expected)


@pytest.mark.parametrize(("n", "m"), [(360, 128), (1008, 128), (4608, 1536), (40, 96), (10, 10)])
def test_pooling_equals_adaptive_avg_pool1d(n, m):
    x = torch.randn(3, n)
    reference = F.adaptive_avg_pool1d(x[:, None], m)[:, 0]
    torch.testing.assert_close(x @ adaptive_avg_pool_matrix(n, m), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pool_last_dim(x, m), reference, atol=1e-5, rtol=1e-5)


def test_local_aggregation_matches_patchcore_pipeline():
    """Unfold 3x3, upsample level 2 to level 1, pool per level, then pool the level-major concatenation."""
    torch.manual_seed(0)
    f1, f2 = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)
    agg = LocalAggregation([4, 6], pretrain_dim=12, target_dim=10)
    out = agg([f1, f2])
    u1 = F.unfold(f1, 3, padding=1).transpose(1, 2)  # (B, 64, 36)
    u2 = F.unfold(f2, 3, padding=1).reshape(2, 54, 4, 4)
    u2 = F.interpolate(u2, size=(8, 8), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
    p1 = F.adaptive_avg_pool1d(u1.reshape(-1, 1, 36), 12).reshape(2, 64, 12)
    p2 = F.adaptive_avg_pool1d(u2.reshape(-1, 1, 54), 12).reshape(2, 64, 12)
    merged = torch.stack([p1, p2], dim=2).reshape(-1, 1, 24)
    expected = F.adaptive_avg_pool1d(merged, 10).reshape(2, 64, 10)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_branch_normalizer():
    norm = BranchNormalizer()
    x = torch.tensor([2.0, 3.0])
    torch.testing.assert_close(norm.normalize_score(x), x)  # identity before fitting
    norm.fit(torch.tensor([1.0, 5.0]), torch.tensor([0.0, 1.0]), torch.tensor([2.0, 5.0]))
    torch.testing.assert_close(norm.normalize_score(torch.tensor([1.0, 5.0, 3.0])), torch.tensor([0.0, 1.0, 0.5]))
    a = (1 / 2 + 1 / 4) / 2
    b = (0 / 2 + 1 / 4) / 2
    torch.testing.assert_close(norm.normalize_map(torch.tensor(4.0)), torch.tensor(4.0 * a - b))
    with pytest.raises(ValueError, match="empty"):
        norm.fit(torch.tensor([]), torch.tensor([]), torch.tensor([]))
