"""The cost tool measures every model's workload (tiny configurations here; the real ones are minutes)."""

from __future__ import annotations

import pytest

from anomalib_fewshot.benchmark import cost
from tests.helpers import TINY_CONFIGS

TINY = {
    "pcsnet": {k: v for k, v in TINY_CONFIGS["Pcsnet"].items() if k not in ("epochs", "k_shot", "resize_size")},
    "ed": {
        k: v
        for k, v in TINY_CONFIGS["Ed"].items()
        if k in ("backbone", "layers", "pre_trained", "image_size", "d_models", "num_heads", "num_layers")
    },
    "fdsl": {
        k: v
        for k, v in TINY_CONFIGS["Fdsl"].items()
        if k
        in (
            "backbone",
            "vision_cfg",
            "layers",
            "pre_trained",
            "image_size",
            "head_dims",
            "window_size",
            "window_stride",
        )
    },
}


@pytest.mark.parametrize("model", sorted(cost.PROFILES))
def test_cost_profile_measures_a_step_and_an_image(model: str, monkeypatch):
    monkeypatch.setitem(cost.PROFILES, model, {"tiny": TINY[model]})
    row = cost.profile(model, "tiny", repeats=1)
    assert row["params_M"] > 0 and row["step_ms"] > 0 and row["infer_ms"] > 0


def test_shipped_cost_profiles_build():
    from anomalib_fewshot.models.fdsl.torch_model import FdslModel

    for name, config in cost.PROFILES["fdsl"].items():
        if not name.startswith("paper"):
            FdslModel(**config)  # window geometry valid for every lite candidate
