"""The image score a model ships (:class:`~anomalib_fewshot.components.nn.scoring.ImageScore`, ``image_score``)."""

from __future__ import annotations

import pytest
import torch

from anomalib_fewshot.components.lifecycle.calibration import (
    STATISTICS_SEED_OFFSET,
    calibration_sets,
    fit_image_score,
)
from anomalib_fewshot.components.nn.scoring import IMAGE_SCORES, ImageScore
from anomalib_fewshot.errors import InvalidArgumentError


def _maps() -> torch.Tensor:
    """Two 10 x 10 maps: one with a single hot pixel, one with a broad warm patch."""
    maps = torch.zeros(2, 1, 10, 10)
    maps[0, 0, 0, 0] = 10.0
    maps[1, 0, :4, :4] = 4.0
    return maps


def test_stateless_rules():
    maps, own = _maps(), torch.tensor([7.0, 8.0])
    assert torch.equal(ImageScore("model")(own, maps), own)
    assert ImageScore("max")(own, maps).tolist() == [10.0, 4.0]
    # the highest 1 % of 100 pixels is one pixel; at 20 % the broad patch outweighs the single hot pixel
    assert ImageScore("top1")(own, maps).tolist() == [10.0, 4.0]
    assert ImageScore("top1", top_share=0.2)(own, maps).tolist() == pytest.approx([0.5, 3.2])
    assert not any(name.startswith("normal") for name, _ in ImageScore("top1").named_buffers())


def test_resid_and_z_take_out_what_normal_views_vary_in():
    # normal views vary strongly in the top-left corner (a moving highlight) and not elsewhere
    generator = torch.Generator().manual_seed(0)
    normal = torch.rand(16, 1, 10, 10, generator=generator) * 0.1
    normal[:, :, :2, :2] += torch.linspace(0, 10, 16)[:, None, None, None]
    test = torch.zeros(2, 1, 10, 10)
    test[0, 0, 0, 0] = 7.0  # bright where normal views vary (mean 5): a highlight, not a defect
    test[1, 0, 6, 6] = 3.0  # less bright where normal views never vary: a defect
    own = test.flatten(1).amax(1)
    assert own[0] > own[1]  # the map's maximum ranks the highlight first
    for rule in ("resid", "z"):
        score = ImageScore(rule)
        score.fit(normal)
        assert score.normal_mean.shape == (1, 1, 10, 10)
        ranked = score(own, test)
        assert ranked[1] > ranked[0], rule
    z = ImageScore("z")
    z.fit(normal)
    assert float(z.normal_scale.min()) >= 0.1 * float(normal[:, 0].std(0).mean()) - 1e-6  # the floor


def test_statistics_round_trip_through_a_state_dict_and_are_required():
    score = ImageScore("z")
    with pytest.raises(InvalidArgumentError, match="no normal-view statistics"):
        score(torch.zeros(1), torch.zeros(1, 1, 4, 4))
    score.fit(torch.rand(4, 4, 4))
    fresh = ImageScore("z")
    fresh.load_state_dict(score.state_dict())  # the buffers take the checkpoint's shape
    maps = torch.rand(3, 1, 4, 4)
    assert torch.equal(fresh(torch.zeros(3), maps), score(torch.zeros(3), maps))
    with pytest.raises(InvalidArgumentError, match="at least 2 normal views"):
        ImageScore("resid").fit(torch.rand(1, 4, 4))
    with pytest.raises(InvalidArgumentError, match="image_score must be one of"):
        ImageScore("mean")
    assert set(IMAGE_SCORES) == {"model", "max", "top1", "resid", "z"}


def test_fit_image_score_reads_other_views_than_the_calibration_sets_with_the_model_own_score():
    seen_rules, seen_images = [], []
    rule = ImageScore("resid")

    def score(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen_rules.append(rule.rule)
        seen_images.append(images)
        return images.mean((1, 2, 3)), images.mean(1)

    shots = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    fit_image_score(rule, score, shots, seed=5)
    assert set(seen_rules) == {"model"} and rule.rule == "resid"  # scored with the rule bypassed, then restored
    expected = calibration_sets(shots, seed=5 + STATISTICS_SEED_OFFSET)[0]
    assert torch.equal(torch.cat(seen_images), expected)
    assert torch.allclose(rule.normal_mean[0, 0], expected.mean(1).mean(0))
    calls = len(seen_images)
    fit_image_score(ImageScore("max"), score, shots)  # a stateless rule scores nothing
    assert len(seen_images) == calls
