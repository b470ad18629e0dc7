"""The INT8 calibration set: the stored shots first, then seeded normal views of them; nothing else."""

from __future__ import annotations

import torch

from anomalib_fewshot.components.lifecycle.quantization import MAX_CALIBRATION_SHOTS, calibration_images, pack_shots


def test_calibration_set_is_the_shots_then_their_views():
    shots = list(torch.rand(3, 3, 16, 16))
    packed = pack_shots(shots)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 3, 16, 16)
    assert torch.allclose(packed.float() / 255, torch.stack(shots), atol=0.5 / 255 + 1e-6)
    images = calibration_images(packed, 10)
    assert images.shape == (10, 3, 16, 16)
    assert torch.equal(images[:3], packed.float() / 255)  # the shots themselves come first
    assert not torch.allclose(images[3], images[0], atol=1e-3)  # then views that differ from them
    assert torch.equal(images, calibration_images(packed, 10))  # seeded
    assert torch.equal(calibration_images(packed, 2), packed[:2].float() / 255)
    assert len(pack_shots(list(torch.rand(MAX_CALIBRATION_SHOTS + 5, 3, 4, 4)))) == MAX_CALIBRATION_SHOTS
