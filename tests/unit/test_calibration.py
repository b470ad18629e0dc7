"""The OK/NG decision from good images alone (:mod:`anomalib_fewshot.components.lifecycle.calibration`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anomalib.data import InferenceBatch
from anomalib.post_processing import PostProcessor

from anomalib_fewshot.benchmark.job import decision_metrics
from anomalib_fewshot.components.lifecycle.calibration import (
    Calibration,
    CalibrationScores,
    ShotPostProcessor,
    apply_calibration,
    calibrate,
    calibration_sets,
    fit_calibration,
)
from anomalib_fewshot.errors import InvalidArgumentError


def _scores(normal: list[float], defects: list[float], size: int = 4) -> CalibrationScores:
    """Calibration scores whose maps are constant per image (the image's score), defects masked in one corner."""
    normal_t, defect_t = torch.tensor(normal), torch.tensor(defects)
    normal_maps = normal_t[:, None, None].expand(-1, size, size).clone()
    defect_maps = torch.zeros(len(defects), size, size)
    masks = torch.zeros(len(defects), size, size, dtype=torch.bool)
    masks[:, :2, :2] = True
    defect_maps[masks] = defect_t.repeat_interleave(4)
    return CalibrationScores(normal_t, normal_maps, defect_t, defect_maps, masks)


def test_the_f1_rule_puts_the_thresholds_between_normal_views_and_defects():
    scored = _scores([0.1, 0.2, 0.3, 0.4], [0.6, 0.7, 0.8, 0.9])
    calibration = fit_calibration(scored, "f1")
    assert calibration.image_threshold == pytest.approx(0.5)  # midway in the gap, so ">" catches every defect
    assert calibration.pixel_threshold == pytest.approx(0.5)
    assert calibration.normal_alarm_rate == 0.0 and calibration.defect_catch_rate == 1.0
    assert (calibration.image_min, calibration.image_max) == pytest.approx((0.1, 0.9))
    assert (calibration.pixel_min, calibration.pixel_max) == pytest.approx((0.0, 0.9))


def test_the_fpr_rule_lets_the_target_share_of_normal_views_pass():
    normal = torch.linspace(0, 1, 101).tolist()
    calibration = fit_calibration(_scores(normal, [2.0, 3.0]), "fpr", target_fpr=0.05)
    assert calibration.image_threshold == pytest.approx(0.95)
    assert calibration.normal_alarm_rate == pytest.approx(0.05, abs=0.011)
    # the pixel threshold: the same share of the normal views' map maxima (here the image scores)
    assert calibration.pixel_threshold == pytest.approx(0.95)
    strict = fit_calibration(_scores(normal, [2.0, 3.0]), "fpr", target_fpr=0.0)
    assert strict.image_threshold == pytest.approx(1.0)


def test_bad_rules_and_outputs_are_clear_errors():
    with pytest.raises(InvalidArgumentError, match="rule must be one of"):
        fit_calibration(_scores([0.1], [0.9]), "median")
    with pytest.raises(InvalidArgumentError, match="target_fpr"):
        fit_calibration(_scores([0.1], [0.9]), "fpr", target_fpr=1.0)
    with pytest.raises(InvalidArgumentError, match="non-finite"):
        fit_calibration(_scores([0.1, float("nan")], [0.9]), "f1")
    with pytest.raises(InvalidArgumentError, match=r"\(N, 3, S, S\)"):
        calibration_sets(torch.rand(3, 8, 8))


def test_calibration_sets_are_seeded_views_with_exact_defect_masks():
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    normal, defective, masks = calibration_sets(images, views=6, seed=3)
    assert normal.shape == defective.shape == (6, 3, 32, 32) and masks.shape == (6, 32, 32)
    assert masks.flatten(1).any(1).all(), "a synthetic defect without mask"
    assert not any(torch.equal(view, image) for view in normal for image in images), "a shot itself as a view"
    again = calibration_sets(images, views=6, seed=3)
    for a, b in zip((normal, defective, masks), again, strict=True):
        assert torch.equal(a, b)
    other = calibration_sets(images, views=6, seed=4)
    assert not torch.equal(other[1], defective)
    with_images = calibration_sets(images, views=6, seed=3, include_images=True)[0]
    assert torch.equal(with_images[:2], images) and torch.equal(with_images[2:], normal)


def test_the_shot_post_processor_ignores_validation_where_anomalib_s_fits_on_it():
    batch = InferenceBatch(pred_score=torch.tensor([0.2, 0.9]), pred_label=None, anomaly_map=None, pred_mask=None)

    class Outputs:
        pred_score = batch.pred_score
        gt_label = torch.tensor([0, 1])
        anomaly_map = torch.rand(2, 4, 4)
        gt_mask = torch.zeros(2, 4, 4, dtype=torch.bool)

    ours, anomalib_s = ShotPostProcessor(), PostProcessor()
    for post in (ours, anomalib_s):
        post.on_validation_batch_end(None, None, Outputs())
        post.on_validation_epoch_end(None, None)
    assert torch.isnan(ours.image_threshold) and torch.isnan(ours.image_min)
    assert torch.isfinite(anomalib_s.image_threshold)  # the behaviour ours switches off


def test_calibrate_writes_the_buffers_the_deployed_decision_uses():
    post = ShotPostProcessor()

    def score(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # a "model": brightness is the anomaly
        maps = images.mean(1)
        return maps.flatten(1).amax(1), maps

    images = torch.full((1, 3, 32, 32), 0.3)
    calibration = calibrate(post, score, images, rule="f1", views=8)
    assert isinstance(calibration, Calibration)
    assert post.image_threshold.item() == pytest.approx(calibration.image_threshold)
    raw = torch.tensor([calibration.image_threshold - 1e-3, calibration.image_threshold + 1e-3])
    out = post(InferenceBatch(pred_score=raw, anomaly_map=raw[:, None, None].expand(-1, 4, 4), pred_label=None,
                              pred_mask=None))  # fmt: skip
    assert out.pred_label.tolist() == [False, True]


def test_decision_metrics_count_the_decisions_at_the_shipped_threshold():
    post = ShotPostProcessor()
    apply_calibration(post, fit_calibration(_scores([0.0, 0.5], [1.0, 1.5]), "fpr", target_fpr=0.0))  # 0.5
    scores = np.array([0.1, 0.6, 0.2, 0.7, 0.9, 0.3], dtype=np.float32)
    labels = np.array([0, 0, 0, 1, 1, 1])
    maps = np.zeros((6, 4, 4), np.float32)
    masks = np.zeros((6, 4, 4), bool)
    metrics = decision_metrics(post, scores, maps, labels, masks)
    assert metrics["image_fpr"] == pytest.approx(1 / 3, abs=1e-4)
    assert metrics["image_tpr"] == pytest.approx(2 / 3, abs=1e-4)
    assert metrics["image_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1), abs=1e-4)
    assert "pixel_f1" not in metrics  # no defect pixel in the evaluated split
    assert metrics["image_threshold"] == pytest.approx(0.5)  # the raw score the shipped model says NG at
    assert decision_metrics(ShotPostProcessor(), scores, maps, labels, masks) == {}  # never calibrated


def test_strong_views_depart_further_from_the_shots_than_mild_ones():
    images = torch.nn.functional.interpolate(
        torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)), size=(64, 64), mode="bilinear"
    )
    mild = calibration_sets(images, views=8, seed=0, strength="mild")[0]
    strong = calibration_sets(images, views=8, seed=0, strength="strong")[0]
    distance = {name: float((views - images).abs().mean()) for name, views in (("mild", mild), ("strong", strong))}
    assert distance["strong"] > 1.5 * distance["mild"], distance
    with pytest.raises(InvalidArgumentError, match="view strength"):
        calibration_sets(images, strength="wild")
