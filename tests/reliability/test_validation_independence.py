"""The OK/NG decision a fit ships does not depend on the validation split (issue 47).

Anomalib fits thresholds and normalisation on the validation pass, which it takes from the test split by default.
Our models calibrate from their shots at the end of training instead: the same fit with a validation split of
entirely different images, or with an unreadable one that is never opened, gives the same thresholds and the same
raw outputs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_fewshot.models import REGISTRY
from tests.helpers import TINY_IMAGE_SIZE, fit_tiny

BUFFERS = ("_image_threshold", "_pixel_threshold", "image_min", "image_max", "pixel_min", "pixel_max")


def _copy_with_test_images(source: Path, target: Path, content: str) -> Path:
    """A copy of the tiny dataset whose test images are ``noise`` images or ``garbage`` bytes."""
    shutil.copytree(source, target)
    rng = np.random.default_rng(7)
    for path in sorted((target / "tiny" / "test").rglob("*.png")):
        if content == "noise":
            noise = rng.integers(0, 256, size=(TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), dtype=np.uint8)
            Image.fromarray(noise).save(path)
        else:
            path.write_bytes(b"unreadable: this fit must never open its validation images")
    return target


def _state(model) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    images = torch.rand(3, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, generator=torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        raw = model.model(model.pre_processor(images))
    buffers = {name: float(getattr(model.post_processor, name)) for name in BUFFERS}
    return buffers, raw.pred_score, raw.anomaly_map


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REGISTRY))
def test_thresholds_and_outputs_do_not_depend_on_the_validation_split(name: str, tmp_path: Path, tiny_data_root):
    reference, _ = fit_tiny(name, tiny_data_root, tmp_path / "a")
    noise_root = _copy_with_test_images(tiny_data_root, tmp_path / "noise", "noise")
    on_noise, _ = fit_tiny(name, noise_root, tmp_path / "b")
    garbage_root = _copy_with_test_images(tiny_data_root, tmp_path / "garbage", "garbage")
    without, _ = fit_tiny(name, garbage_root, tmp_path / "c", engine_kwargs={"limit_val_batches": 0})
    buffers, scores, maps = _state(reference)
    assert all(np.isfinite(v) for v in buffers.values()), buffers
    for other in (on_noise, without):
        other_buffers, other_scores, other_maps = _state(other)
        assert other_buffers == buffers
        torch.testing.assert_close(other_scores, scores, rtol=0, atol=0)
        torch.testing.assert_close(other_maps, maps, rtol=0, atol=0)
