"""PCSNet building blocks: exact pooling, descriptor, prototype distances, losses, pseudo-anomalies, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anomalib_fewshot.components.anomalies import NSA_CATEGORY_PARAMS, PatchSwapAnomaly, PatchSwapParams
from anomalib_fewshot.components.lifecycle.pool import ZeroStepsError
from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.models.pcsnet import Pcsnet, PcsnetModel
from anomalib_fewshot.models.pcsnet.layers import (
    AdaptiveAvgPool2dExact,
    CoordConv1x1,
    PrototypeDescriptor,
    prototype_distances,
)
from anomalib_fewshot.models.pcsnet.loss import PcsnetLoss
from tests.helpers import TINY_CONFIGS


@pytest.mark.parametrize(("size", "out"), [(64, 60), (64, 30), (64, 15), (64, 8), (32, 30), (16, 5), (7, 7)])
def test_exact_adaptive_pooling_equals_torch(size, out):
    x = torch.randn(2, 3, size, size)
    pool = AdaptiveAvgPool2dExact((size, size), (out, out))
    torch.testing.assert_close(pool(x), F.adaptive_avg_pool2d(x, out), rtol=0, atol=1e-5)


def test_exact_adaptive_pooling_rectangular():
    x = torch.randn(1, 2, 64, 48)
    pool = AdaptiveAvgPool2dExact((64, 48), (15, 11))
    torch.testing.assert_close(pool(x), F.adaptive_avg_pool2d(x, (15, 11)), rtol=0, atol=1e-5)


def test_coordconv_appends_coordinates():
    conv = CoordConv1x1(1, 1, (3, 5))
    with torch.no_grad():
        conv.conv.weight.zero_()
        conv.conv.weight[0, 1] = 1.0  # picks the x channel
        conv.conv.bias.zero_()
    out = conv(torch.zeros(2, 1, 3, 5))
    assert out.shape == (2, 1, 3, 5)
    torch.testing.assert_close(out[0, 0, 0], torch.linspace(-1, 1, 5))
    torch.testing.assert_close(conv.coords[0, 1, :, 0], torch.linspace(-1, 1, 3))


def test_descriptor_shapes_and_reduced_variant():
    features = [torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8), torch.randn(2, 32, 4, 4)]
    sizes = [(16, 16), (8, 8), (4, 4)]
    full = PrototypeDescriptor([8, 16, 32], sizes, grid=12, reduced=False)
    assert full(features).shape == (2, 56, 12, 12)
    reduced = PrototypeDescriptor([8, 16, 32], sizes, grid=12, reduced=True)
    assert reduced.out_channels == 28
    assert reduced(features).shape == (2, 28, 12, 12)


def test_descriptor_level_is_pool_then_coordconv_then_resize():
    feature = torch.randn(1, 4, 8, 8)
    descriptor = PrototypeDescriptor([4], [(8, 8)], grid=16, reduced=False)
    pooled = F.avg_pool2d(feature, 3, stride=1, padding=1)
    expected = F.interpolate(descriptor.coord[0](pooled), size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(descriptor([feature]), expected)


def test_prototype_distances_match_cdist():
    features = torch.randn(2, 6, 4, 4)
    prototypes = torch.randn(10, 6)
    distances = prototype_distances(features, prototypes, prototypes.pow(2).sum(-1))
    expected = torch.cdist(features.flatten(2).transpose(1, 2), prototypes[None].expand(2, -1, -1))
    torch.testing.assert_close(distances, expected, rtol=1e-4, atol=1e-4)
    # identical vectors: distance clamps at sqrt(eps), never NaN, gradient finite
    same = prototypes[:1].view(1, 6, 1, 1).clone().requires_grad_(True)
    d = prototype_distances(same, prototypes[:1], prototypes[:1].pow(2).sum(-1))
    d.sum().backward()
    assert torch.isfinite(same.grad).all()


def _tiny_model(**overrides) -> PcsnetModel:
    config = {k: v for k, v in TINY_CONFIGS["Pcsnet"].items() if k in PcsnetModel.__init__.__code__.co_varnames}
    config.update(overrides)
    return PcsnetModel(**config)


def test_prototypes_and_nearest_map():
    model = _tiny_model().eval()
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        descriptors = model.describe(images)
        model.set_prototypes(descriptors)
    assert bool(model.prototypes_ready)
    torch.testing.assert_close(model.prototypes, descriptors.mean(0).flatten(1).t())
    with torch.no_grad():
        nearest = model.nearest(model.distances(descriptors[:1]), model.num_nearest)
    assert nearest.shape == (1, 16 * 16, 8)
    assert (nearest[..., 1:] >= nearest[..., :-1]).all()  # ascending
    assert model.distance_map(nearest).shape == (1, 8, 16, 16)
    # a descriptor equal to the prototypes has (near) zero distance to its own position's prototype
    with torch.no_grad():
        mean = descriptors.mean(0, keepdim=True)
        own = model.nearest(model.distances(mean), 1).max()
        typical = model.distances(descriptors[:1]).median()
    assert own < 1e-2 * typical


def test_the_inference_selection_equals_the_root_of_every_distance():
    # the square root after the selection (and a minimum for k = 1) gives what selecting on the roots gives,
    # ties included: the descriptor itself among the prototypes is at distance ~0 from several equal copies
    model = _tiny_model().eval()
    with torch.no_grad():
        descriptors = model.describe(torch.rand(2, 3, 64, 64))
        model.set_prototypes(torch.cat([descriptors[:1], descriptors[:1]]))  # the mean of two equal shots
        for k in (1, 3, model.num_nearest):
            expected = model.nearest(model.distances(descriptors), k)
            torch.testing.assert_close(model.nearest_distances(descriptors, k), expected, rtol=0, atol=0)


def test_per_shot_prototypes_keep_every_shot_position():
    model = _tiny_model(prototype_sets=3).eval()
    images = torch.rand(3, 3, 64, 64)
    model.prepare(images)
    with torch.no_grad():
        descriptors = model.train().describe(images)
        model.eval()
    assert model.prototypes.shape == (3 * 16 * 16, descriptors.shape[1])
    torch.testing.assert_close(model.prototypes[16 * 16 + 5], descriptors[1, :, 0, 5])  # shot 1, row 0, column 5
    with torch.no_grad():  # each shot is at (near) zero distance from its own prototypes, not from the mean
        own = model.nearest(model.distances(descriptors), 1).max()
    assert own < 1e-2 * model.distances(descriptors[:1]).median()
    with pytest.raises(ValueError, match="prototype_sets=3 needs exactly"):
        model.prepare(images[:2])
    with pytest.raises(ValueError, match="integer k_shot"):
        Pcsnet(**{**TINY_CONFIGS["Pcsnet"], "k_shot": None}, prototypes="per_shot")
    assert Pcsnet(**{**TINY_CONFIGS["Pcsnet"], "k_shot": 2}, prototypes="per_shot").model.prototype_sets == 2


def test_eval_forward_is_per_image():
    model = _tiny_model().eval()
    images = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        model.set_prototypes(model.describe(images))
        batch = model(images)
        single = model(images[2:3])
    assert batch.anomaly_map.shape == (4, 1, 64, 64)
    torch.testing.assert_close(batch.anomaly_map[2:3], single.anomaly_map, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batch.pred_score, batch.anomaly_map.amax(dim=(1, 2, 3)))


def test_ablation_switches():
    images = torch.rand(2, 3, 64, 64)
    plain = _tiny_model(use_coordinates=False).eval()
    assert not hasattr(plain.descriptor.coord[0], "coords")
    assert plain.descriptor.coord[0].conv.in_channels == plain.descriptor.coord[0].conv.out_channels
    pfa_only = _tiny_model(use_cas=False, anomaly_map="cas").eval()  # the paper map falls back to PFA alone
    assert pfa_only.cas is None
    with torch.no_grad():
        pfa_only.set_prototypes(pfa_only.describe(images))
        out = pfa_only(images)
        nearest = pfa_only.nearest(pfa_only.distances(pfa_only.describe(images)), 1)
    assert out.anomaly_map.shape == (2, 1, 64, 64)
    expected = pfa_only.smoothing(pfa_only.prototype_map(nearest, (64, 64)))
    torch.testing.assert_close(out.anomaly_map, expected)


def test_feature_activation_is_leaky_relu_of_each_level():
    images = torch.rand(2, 3, 64, 64)
    torch.manual_seed(0)
    leaky = _tiny_model(feature_activation="leaky_relu")
    torch.manual_seed(0)
    plain = _tiny_model(feature_activation="none")
    raw = plain.backbone_features(images)
    assert any((level < 0).any() for level in raw)  # EfficientNet-Lite block outputs are signed
    for got, level in zip(leaky.backbone_features(images), raw, strict=True):
        torch.testing.assert_close(got, F.leaky_relu(level))


def test_fused_map_standardises_both_branches_on_the_shots():
    torch.manual_seed(0)
    model = _tiny_model(anomaly_map="cas+prototype").eval()
    shots, queries = torch.rand(2, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        model.set_prototypes(model.describe(shots))
        model.fit_map_statistics(list(shots))
        cas, prototype = model.branch_maps(shots)
        stats = model.map_statistics.clone()
        out = model(queries)
        cas_q, prototype_q = model.branch_maps(queries)
    torch.testing.assert_close(stats, torch.stack([cas.mean(), cas.std(), prototype.mean(), prototype.std()]))
    expected = (cas_q - stats[0]) / stats[1] + (prototype_q - stats[2]) / stats[3]
    torch.testing.assert_close(out.anomaly_map, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.pred_score, expected.amax(dim=(1, 2, 3)), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(out.anomaly_map, cas_q)  # not the CAS map alone
    with pytest.raises(ValueError, match="use_cas"):
        _tiny_model(anomaly_map="cas+prototype", use_cas=False)


@pytest.mark.slow  # fits through Engine
def test_fused_fit_sets_statistics_from_the_shots(tmp_path, tiny_data_root):
    model, _, _ = _fit(tmp_path, tiny_data_root, anomaly_map="cas+prototype", epochs=1)
    assert not torch.equal(model.model.map_statistics, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert (model.model.map_statistics[[1, 3]] > 0).all()


@pytest.mark.slow  # fits through Engine
def test_checkpoint_from_before_the_switches_loads_as_it_ran(tmp_path, tiny_data_root):
    # the model such a checkpoint held: no activation, the paper map (the loader restores exactly that)
    model, engine, _ = _fit(tmp_path, tiny_data_root, feature_activation="none", anomaly_map="cas", epochs=1)
    path = tmp_path / "model.ckpt"
    engine.trainer.save_checkpoint(path)
    old = torch.load(path, map_location="cpu", weights_only=False)
    del old["hyper_parameters"]["feature_activation"], old["hyper_parameters"]["anomaly_map"]
    del old["state_dict"]["model.map_statistics"]
    torch.save(old, path)
    loaded = Pcsnet.load_from_checkpoint(path).eval()
    assert loaded.model.feature_activation == "none"  # not the new default: the model ran without it
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(images).anomaly_map, model.model.eval()(images).anomaly_map)


@pytest.mark.slow  # fits through Engine
def test_pfa_only_fit(tmp_path, tiny_data_root):
    model, engine, _ = _fit(tmp_path, tiny_data_root, use_cas=False, anomaly_map="cas", epochs=2)
    assert model.model.cas is None
    assert engine.trainer.global_step == 2
    assert len(engine.trainer.optimizers[0].param_groups) == 1


def test_model_arguments_validated():
    with pytest.raises(ValueError, match="num_nearest"):
        _tiny_model(num_nearest=16 * 16 + 1)
    with pytest.raises(ValueError, match="guide_channels"):
        _tiny_model(guide_channels=10_000)
    with pytest.raises(ValueError, match="pyramid_bins"):
        _tiny_model(pyramid_bins=[32])
    with pytest.raises(InvalidArgumentError, match="use_cas=True"):
        _tiny_model(use_cas=False, anomaly_map="cas+prototype")


# ---------------------------------------------------------------------------------------------------- losses
def test_compactness_loss():
    loss = PcsnetLoss(nu=0.5)
    nearest = torch.tensor([[[0.1, 0.5, 0.9, 5.0]]])
    radius = torch.tensor(0.5)  # r² = 0.25: hinge over the 3 nearest = (0, 0.25, 0.65)
    assert loss.compactness(nearest, radius).item() == pytest.approx((0.25 + 0.65) / 3 / 0.5)


def test_separation_loss_intended_uses_only_anomalous_positions():
    loss = PcsnetLoss(nu=1.0, alpha=0.2, neighbors=2)
    radius = torch.tensor(0.3)  # (r + α)² = 0.25
    nearest = torch.tensor([[[0.0, 0.1], [0.05, 1.0]]])  # two positions
    masks = torch.tensor([[0.0, 1.0]])
    value = loss.separation(nearest, torch.empty(0), masks, radius)
    assert value.item() == pytest.approx((0.20 + 0.0) / 2)
    assert loss.separation(nearest, torch.empty(0), torch.zeros_like(masks), radius).item() == 0.0


def test_separation_loss_original_reproduces_reference_axis():
    loss = PcsnetLoss(nu=1.0, alpha=0.0, neighbors=1, afs_mode="original")
    radius = torch.tensor(1.0)
    # one image, a 2x2 grid (4 positions), 3 prototypes; one anomalous position
    distances = torch.full((1, 4, 3), 2.0)
    masks = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    # masked (1, 3, 2, 2) tensor: zeros except position 3; the smallest along the last axis is 0 in every row
    value = loss.separation(torch.empty(0), distances, masks, radius)
    assert value.item() == pytest.approx(1.0)  # relu(1 - 0), dominated by masked-out zeros (the code's bug)
    intended = PcsnetLoss(nu=1.0, alpha=0.0, neighbors=1)
    assert intended.separation(distances.sort(-1).values, distances, masks, radius).item() == 0.0


def test_disparity_loss_is_pairwise_cross_entropy():
    loss = PcsnetLoss(neighbors=1, pdc_top=1)
    nearest = torch.tensor([[[1.0], [0.0]], [[3.0], [0.0]]])  # image scores: 1 and 3
    anomalous = torch.tensor([0.0, 1.0])
    expected = -math.log(math.exp(3) / (math.exp(1) + math.exp(3)))
    assert loss.disparity(nearest, anomalous).item() == pytest.approx(expected, rel=1e-5)
    swapped = loss.disparity(nearest, torch.tensor([1.0, 0.0])).item()
    assert swapped > loss.disparity(nearest, anomalous).item()


def test_segmentation_loss_and_weights():
    loss = PcsnetLoss()
    masks = torch.zeros(1, 1, 4, 4)
    assert loss.segmentation(masks + 0.5, masks).item() == pytest.approx(0.25)
    total = loss.weighted({"nfc": torch.tensor(1.0), "afs": torch.tensor(1.0), "pdc": torch.tensor(1.0)})
    assert total.item() == pytest.approx(52.0)
    with pytest.raises(ValueError, match="afs_mode"):
        PcsnetLoss(afs_mode="bogus")


# ---------------------------------------------------------------------------------------------------- NSA
def _textured_image(size: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(3, size, size, generator=generator)


def test_patch_swap_changes_only_labelled_region_and_is_seeded():
    image = _textured_image()
    anomaly = PatchSwapAnomaly(PatchSwapParams(num_patches=2))
    out_a, mask_a = anomaly(image, np.random.default_rng(3))
    out_b, mask_b = anomaly(image, np.random.default_rng(3))
    assert torch.equal(out_a, out_b)
    assert torch.equal(mask_a, mask_b)
    assert mask_a.shape == (1, 64, 64)
    assert mask_a.sum() > 0
    changed = (out_a - image).abs().mean(0) * 255 > 1.0
    # the label is the changed area after a 5x5 median: nearly all changed pixels are labelled
    assert (changed & (mask_a[0] > 0)).sum() >= 0.9 * changed.sum()
    out_c, _ = anomaly(image, np.random.default_rng(4))
    assert not torch.equal(out_a, out_c)


def test_patch_swap_respects_background_rule():
    anomaly = PatchSwapAnomaly(NSA_CATEGORY_PARAMS["bottle"], max_attempts=20)
    blank = torch.ones(3, 64, 64)  # background only: no source patch qualifies, nothing changes
    out, mask = anomaly(blank, np.random.default_rng(0))
    assert torch.equal(out, blank)
    assert mask.sum() == 0
    image = torch.ones(3, 64, 64)  # a dark textured object on a white background
    image[:, 16:48, 16:48] = _textured_image(32) * 0.3
    for seed in range(5):
        _, mask = anomaly(image, np.random.default_rng(seed))
        on_object = mask[0, 16:48, 16:48].sum()
        assert on_object > 0
        assert on_object >= 0.25 * mask.sum()  # the source is object and must overlap object at the destination


def test_patch_swap_arguments_validated():
    with pytest.raises(ValueError, match="width bounds"):
        PatchSwapAnomaly(PatchSwapParams(width_bounds=((0.3, 0.1), (0.1, 0.2))))
    with pytest.raises(ValueError, match="num_patches"):
        PatchSwapAnomaly(PatchSwapParams(num_patches=0))


def test_lightning_model_anomaly_overrides():
    model = Pcsnet(**TINY_CONFIGS["Pcsnet"], anomaly_num_patches=2, anomaly_skip_background=[])
    params = model.patch_swap_params("bottle")
    assert params.num_patches == 2
    assert params.skip_background is None  # [] disables the table's background rule
    assert params.width_bounds == NSA_CATEGORY_PARAMS["bottle"].width_bounds
    assert model.patch_swap_params("unknown_part") == PatchSwapParams(num_patches=2, skip_background=None)
    with pytest.raises(ValueError, match="anomaly_width_bounds"):
        Pcsnet(**TINY_CONFIGS["Pcsnet"], anomaly_width_bounds=[[0.1, 0.2]])
    with pytest.raises(ValueError, match="batch_size"):
        Pcsnet(**TINY_CONFIGS["Pcsnet"], batch_size=3)


# ---------------------------------------------------------------------------------------------------- training
def _fit(tmp_path, tiny_data_root, **overrides):
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

    config = {**TINY_CONFIGS["Pcsnet"], **overrides}
    torch.manual_seed(0)  # same initial descriptor in every call
    model = Pcsnet(**config)
    datamodule = MVTecAD(root=tiny_data_root, category="tiny", num_workers=0, eval_batch_size=4)
    engine = Engine(default_root_dir=tmp_path, logger=False, accelerator="cpu", devices=1, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    return model, engine, datamodule


@pytest.mark.slow  # fits through Engine
def test_one_shot_fit_trains_on_shot_and_jittered_copy(tmp_path, tiny_data_root):
    model, engine, _ = _fit(tmp_path, tiny_data_root, k_shot=1, epochs=2)
    assert engine.trainer.global_step == 2  # one pair per epoch at k = 1, never zero steps
    assert bool(model.model.prototypes_ready)
    assert model.few_shot_record["k_shot"] == 1


@pytest.mark.slow  # fits through Engine
def test_prototypes_are_frozen_during_training(tmp_path, tiny_data_root):
    model, _, _ = _fit(tmp_path, tiny_data_root, epochs=1)
    before = model.model.prototypes.clone()
    radius = model.model.radius.detach().clone()
    model2, _, _ = _fit(tmp_path / "b", tiny_data_root, epochs=3)
    # same init and shots: prototypes come from the untrained descriptor and are never updated by training
    torch.testing.assert_close(model2.model.prototypes, before)
    assert model2.model.radius.detach() != radius  # the radius is learned


@pytest.mark.slow  # fits through Engine
def test_zero_step_fit_is_an_error(tmp_path, tiny_data_root):
    with pytest.raises(ZeroStepsError):
        from anomalib.data import MVTecAD
        from anomalib.engine import Engine

        model = Pcsnet(**TINY_CONFIGS["Pcsnet"])
        datamodule = MVTecAD(root=tiny_data_root, category="tiny", num_workers=0)
        engine = Engine(default_root_dir=tmp_path, logger=False, accelerator="cpu", limit_train_batches=0)
        engine.fit(model, datamodule=datamodule)
