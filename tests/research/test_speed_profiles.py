"""``research.speed_profiles``: the size each export is profiled at, and the summary against Patchcore."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from torchvision.transforms.v2 import Compose, Normalize, Resize

from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.profile import NodeTime, Profile
from research import speed_profiles


def test_the_profiled_size_is_the_models_own():
    assert speed_profiles.image_size(SimpleNamespace(hparams={"image_size": 224})) == (224, 224)
    transform = Compose([Resize((240, 200)), Normalize([0.5] * 3, [0.5] * 3)])
    baseline = SimpleNamespace(hparams={}, pre_processor=SimpleNamespace(transform=transform))
    assert speed_profiles.image_size(baseline) == (240, 200)
    with pytest.raises(InvalidArgumentError, match="no image_size"):
        speed_profiles.image_size(SimpleNamespace(hparams={}, pre_processor=None))


def test_the_summary_puts_patchcore_first_with_the_ratios():
    def profile(ms: float, op: str, batch: int = 1) -> Profile:
        return Profile("m.xml", "f32", 1, 1, (batch, 3, 8, 8), ms, [NodeTime("n", op, "jit", ms, "")])

    # Patchcore's export has a fixed batch of 2: the ratio is per image
    profiles = {"Pcsnet": profile(50.0, "TopK"), "Patchcore": profile(40.0, "Convolution", batch=2)}
    rows = [line for line in speed_profiles.summary(profiles, {"Pcsnet": 3e-6}).splitlines() if line.startswith("| [")]
    assert rows[0].startswith("| [Patchcore]") and "| 2 | 40.0 | 20.0 | 1.00 | – |" in rows[0]
    assert rows[1].startswith("| [Pcsnet]") and "| 1 | 50.0 | 50.0 | 2.50 | 3.0e-06 | TopK 100% |" in rows[1]
