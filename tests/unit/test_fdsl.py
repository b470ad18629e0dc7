"""FDSL: nearest-neighbour residuals, window slicing and stitching, losses, head files and head training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.deploy import ExportType, OpenVINOInferencer
from anomalib.engine import Engine

from anomalib_fewshot.components.lifecycle.pool import PoolBatch
from anomalib_fewshot.components.nn.backbones import WeightsError
from anomalib_fewshot.components.nn.tokens import ClipTokens, resize_positional_embedding
from anomalib_fewshot.errors import InvalidArgumentError
from anomalib_fewshot.models import Fdsl
from anomalib_fewshot.models.fdsl import (
    FdslModel,
    HeadWeightsError,
    load_head_weights,
    pretrain_head,
    save_head_weights,
)
from anomalib_fewshot.models.fdsl.head import AnnotatedSplit
from anomalib_fewshot.models.fdsl.loss import FdslLoss, dice_loss, focal_loss, head_loss
from anomalib_fewshot.models.fdsl.torch_model import nearest_residuals
from anomalib_fewshot.models.fdsl.windows import window_offsets
from tests.helpers import TINY_CONFIGS

TINY_VIT = TINY_CONFIGS["Fdsl"]["vision_cfg"]
MODEL_KEYS = (
    "backbone",
    "vision_cfg",
    "layers",
    "pre_trained",
    "image_size",
    "head_dims",
    "window_size",
    "window_stride",
)


def tiny_vit_model(**overrides) -> FdslModel:
    kwargs = {k: TINY_CONFIGS["Fdsl"][k] for k in MODEL_KEYS}
    kwargs.update(overrides)
    return FdslModel(**kwargs).eval()


def tiny_cnn_model(**overrides) -> FdslModel:
    kwargs = {
        "backbone": "tf_efficientnet_lite0",
        "layers": ["blocks.2", "blocks.4"],
        "pre_trained": False,
        "image_size": 64,
        "head_dims": [16, 8],
        "window_size": 4,
        "window_stride": 2,
    }
    kwargs.update(overrides)
    return FdslModel(**kwargs).eval()


@pytest.mark.parametrize("align", ["cosine", "l2"])
@pytest.mark.parametrize("chunk", [5, 4096])
def test_nearest_residuals_match_brute_force(align: str, chunk: int):
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(2, 13, 6, generator=generator)
    bank = torch.randn(17, 6, generator=generator)
    if align == "cosine":
        queries, bank = torch.nn.functional.normalize(queries, dim=-1), torch.nn.functional.normalize(bank, dim=-1)
    got = nearest_residuals(queries, bank, align=align, chunk=chunk)
    for b in range(2):
        for i in range(13):
            if align == "cosine":
                j = int(torch.argmax(bank @ queries[b, i]))
            else:
                j = int(torch.argmin((bank - queries[b, i]).norm(dim=-1)))
            torch.testing.assert_close(got[b, i], (queries[b, i] - bank[j]).abs())


@pytest.mark.parametrize("align", ["cosine", "l2"])
def test_nearest_residuals_with_one_bank_per_image(align: str):
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(3, 11, 5, generator=generator)
    banks = torch.randn(3, 9, 5, generator=generator)
    got = nearest_residuals(queries, banks, align=align, chunk=4)
    for b in range(3):
        torch.testing.assert_close(got[b : b + 1], nearest_residuals(queries[b : b + 1], banks[b], align=align))


@pytest.mark.parametrize("builder", ["vit", "cnn"])
def test_window_index_memory_equals_a_loop_reference(builder: str):
    model = (tiny_vit_model if builder == "vit" else tiny_cnn_model)(window_index=True)
    torch.manual_seed(0)
    model.set_banks(torch.rand(2, 3, 64, 64))
    windows, area = model.windows_per_side**2, model.window_size**2
    assert model.window_embeddings.shape[0] == 2 * windows  # one pooled embedding per reference window
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        tokens, embedded = model.embedded_window_tokens(images)
        got = model.residuals(tokens, model.window_candidates(embedded))
    crops = model.features.normalize(model.extract_windows(images))
    for b in range(2):
        picked = []
        for w in range(windows):
            _, pooled = model.features.forward_embedded(crops[b * windows + w : b * windows + w + 1], window=True)
            similarity = torch.nn.functional.normalize(pooled, dim=-1) @ model.window_embeddings.t()
            picked.append(int(similarity.argmax()))
        for level, bank in enumerate(model.banks(window=True)):
            candidates = torch.cat([bank[j * area : (j + 1) * area] for j in picked])
            reference = nearest_residuals(tokens[level][b : b + 1], candidates)
            torch.testing.assert_close(got[level][b : b + 1], reference, atol=1e-5, rtol=1e-4)
    # the candidates are a subset of the whole window bank: no residual can be smaller than the whole bank's
    whole = model.residuals(tokens, model.banks(window=True))
    assert all(bool((g.norm(dim=-1) >= w.norm(dim=-1) - 1e-5).all()) for g, w in zip(got, whole, strict=True))
    with torch.no_grad():
        output = model(images)
    assert torch.isfinite(output.anomaly_map).all() and output.anomaly_map.shape == (2, 1, 64, 64)


@pytest.mark.parametrize("builder", ["vit", "cnn"])
def test_own_window_matching_equals_a_loop_reference(builder: str):
    model = (tiny_vit_model if builder == "vit" else tiny_cnn_model)(window_index=True, window_match="own")
    torch.manual_seed(0)
    model.set_banks(torch.rand(2, 3, 64, 64))
    windows, area = model.windows_per_side**2, model.window_size**2
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        tokens, embedded = model.embedded_window_tokens(images)
        got = model.window_residuals(tokens, embedded)
        union = model.residuals(tokens, model.window_candidates(embedded))
    picked = (embedded @ model.window_embeddings.t()).argmax(dim=-1)
    for b in range(2):
        for w in range(windows):
            for level, bank in enumerate(model.banks(window=True)):
                j = int(picked[b, w])
                query = tokens[level][b : b + 1, w * area : (w + 1) * area]
                reference = nearest_residuals(query, bank[j * area : (j + 1) * area])
                torch.testing.assert_close(got[level][b : b + 1, w * area : (w + 1) * area], reference)
    # a window's own pick is one of the union's windows: its residuals can only be larger, and some are
    assert all(bool((g.norm(dim=-1) >= u.norm(dim=-1) - 1e-5).all()) for g, u in zip(got, union, strict=True))
    assert any(bool((g.norm(dim=-1) > u.norm(dim=-1) + 1e-4).any()) for g, u in zip(got, union, strict=True))
    with torch.no_grad():
        output = model(images)
    assert torch.isfinite(output.anomaly_map).all() and output.anomaly_map.shape == (2, 1, 64, 64)


def test_nam_combine_max_keeps_the_larger_of_head_and_nam_per_cell():
    torch.manual_seed(0)
    replace = tiny_cnn_model(score_mode="map_max")
    with torch.no_grad():  # a NAM that lowers the anomalous channel everywhere (as one that erased a thin response)
        replace.nam.net[-1].bias.copy_(torch.tensor([2.0, -2.0]))
    combined = tiny_cnn_model(score_mode="map_max", nam_combine="max")
    combined.load_state_dict(replace.state_dict())
    shots, images = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    replace.set_banks(shots)
    combined.set_banks(shots)
    with torch.no_grad():
        levels = replace.global_level_maps(images)
        windows = replace.window_level_maps(images)
        got, old = combined(images), replace(images)

    def fused(maps: list) -> torch.Tensor:
        return torch.stack([torch.maximum(raw[:, 1], refined[:, 1]) for raw, refined in maps], dim=1).mean(1)

    grid = 0.5 * fused(levels) + 0.5 * fused(windows)
    expected = torch.nn.functional.interpolate(grid[:, None], size=(64, 64), mode="bilinear", align_corners=True)
    torch.testing.assert_close(got.anomaly_map, expected)
    torch.testing.assert_close(got.pred_score, grid.flatten(1).amax(-1))
    # the NAM can no longer lower a cell below the head's raw probability: the map never falls, and here it rises
    assert bool((got.anomaly_map >= old.anomaly_map - 1e-6).all())
    assert float((got.anomaly_map - old.anomaly_map).min()) > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize(("window_match", "window_features"), [("union", "encode"), ("own", "encode"), ("own", "crop")])
def test_window_index_model_reloads_and_exports(tmp_path: Path, window_match: str, window_features: str):
    cfg = {k: v for k, v in TINY_CONFIGS["Fdsl"].items() if k not in ("epochs", "pseudo_samples", "batch_size")}
    cfg.update(window_index=True, window_match=window_match, post_processor=False, evaluator=False, visualizer=False)
    cfg["window_features"] = window_features
    cfg["nam_combine"] = "max" if window_match == "own" else "replace"  # "own" + "max": the lite profile's matching
    model = Fdsl(**cfg)
    model.model.set_banks(torch.rand(2, 3, 64, 64))
    model.eval()
    fresh = Fdsl(**cfg).eval()
    fresh.load_state_dict(model.state_dict())
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(images)
        torch.testing.assert_close(fresh(images).pred_score, expected.pred_score)
    engine = Engine(default_root_dir=tmp_path, logger=False)
    path = engine.export(model, ExportType.ONNX, export_root=tmp_path, onnx_kwargs={"opset_version": 18})
    inferencer = OpenVINOInferencer(path=path, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    result = inferencer.predict(images)
    np.testing.assert_allclose(
        np.asarray(result.pred_score).reshape(-1), expected.pred_score.reshape(-1).numpy(), atol=1e-2
    )
    np.testing.assert_allclose(
        np.asarray(result.anomaly_map).reshape(3, -1), expected.anomaly_map.reshape(3, -1).numpy(), atol=1e-2
    )


def test_window_geometry_is_checked_only_with_lfe():
    assert window_offsets(37, 13, 2) == 13
    with pytest.raises(ValueError, match="do not tile"):
        window_offsets(32, 13, 2)
    with pytest.raises(ValueError, match="window_stride"):
        tiny_cnn_model(window_size=5, window_stride=2)  # grid 8: (8 - 5) % 2 != 0
    assert tiny_cnn_model(window_size=5, window_stride=2, lfe=False).windows_per_side == 0


def test_windows_and_stitching_equal_a_loop_reference():
    model = tiny_cnn_model()  # grid 8, window 4 cells, stride 2 cells -> 3x3 windows of 32 px
    images = torch.rand(2, 3, 64, 64)
    windows = model.extract_windows(images)
    n, size, step = model.windows_per_side, 32, 16
    assert windows.shape == (2 * n * n, 3, size, size)
    expected = [
        images[b, :, r * step : r * step + size, c * step : c * step + size]
        for b in range(2)
        for r in range(n)
        for c in range(n)
    ]
    torch.testing.assert_close(windows, torch.stack(expected))

    w = model.window_size
    probabilities = torch.rand(2, n * n * w * w, 2)
    stitched = model.stitch(probabilities)
    total = torch.zeros(2, 2, model.grid, model.grid)
    count = torch.zeros(model.grid, model.grid)
    per_window = probabilities.reshape(2, n, n, w, w, 2)
    for r in range(n):
        for c in range(n):
            rows, cols = slice(r * 2, r * 2 + w), slice(c * 2, c * 2 + w)
            total[:, :, rows, cols] += per_window[:, r, c].permute(0, 3, 1, 2)
            count[rows, cols] += 1
    torch.testing.assert_close(stitched, total / count)


def test_cropped_window_tokens_are_the_global_maps_cut_per_window():
    model = tiny_cnn_model(window_features="crop", lfe=True, window_index=True)  # 3x3 windows of 4 cells
    images = torch.rand(2, 3, 64, 64)
    maps = model.feature_maps(images)
    tokens, embedded = model.window_tokens(images), model.embedded_window_tokens(images)[1]
    n, w, step = model.windows_per_side, model.window_size, model.window_stride
    for level, level_map in enumerate(maps):
        expected = torch.cat(
            [
                level_map[:, :, r * step : r * step + w, c * step : c * step + w].flatten(2).transpose(1, 2)
                for r in range(n)
                for c in range(n)
            ],
            dim=1,
        )
        torch.testing.assert_close(tokens[level], torch.nn.functional.normalize(expected, dim=-1))
    pooled = torch.stack(
        [
            maps[-1][:, :, r * step : r * step + w, c * step : c * step + w].mean((-2, -1))
            for r in range(n)
            for c in range(n)
        ],
        dim=1,
    )
    torch.testing.assert_close(embedded, torch.nn.functional.normalize(pooled, dim=-1))


def test_cropped_windows_run_one_backbone_pass_and_change_the_lfe_map_only():
    encode = tiny_cnn_model(window_index=True, window_match="own")
    crop = tiny_cnn_model(window_index=True, window_match="own", window_features="crop")
    crop.load_state_dict(encode.state_dict())
    shots, images = torch.rand(2, 3, 64, 64), torch.rand(3, 3, 64, 64)
    encode.set_banks(shots)
    crop.set_banks(shots)
    for level in range(encode.num_levels):  # the same global bank; window banks of the same size
        torch.testing.assert_close(crop.banks()[level], encode.banks()[level])
        assert crop.banks(window=True)[level].shape == encode.banks(window=True)[level].shape
    calls = []
    crop.features.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        got = crop(images)
        windows = crop.window_level_maps(images)
        global_maps = crop.global_level_maps(images)
    assert calls[0] == 3 and len(calls) == 3  # forward: one pass of the 3 images; then one each for the two calls
    fused = [torch.stack([crop.final_anomalous(*m) for m in maps], dim=1).mean(1) for maps in (global_maps, windows)]
    grid = 0.5 * fused[0] + 0.5 * fused[1]
    expected = torch.nn.functional.interpolate(grid[:, None], size=(64, 64), mode="bilinear", align_corners=True)
    torch.testing.assert_close(got.anomaly_map, expected)
    with torch.no_grad():  # the option changes the window tokens (the crops lack the context the global maps have)
        assert float((crop.window_tokens(images)[0] - encode.window_tokens(images)[0]).abs().max()) > 0.1


def test_window_tokens_are_the_backbone_on_each_crop():
    model = tiny_cnn_model()
    images = torch.rand(1, 3, 64, 64)
    tokens = model.window_tokens(images)
    crops = model.extract_windows(images)
    for index in (0, 4, 8):
        single = model.level_tokens(crops[index : index + 1], window=True)
        per_window = model.window_size**2
        for level in range(model.num_levels):
            torch.testing.assert_close(
                tokens[level][0, index * per_window : (index + 1) * per_window], single[level][0]
            )


@pytest.mark.parametrize("builder", [tiny_vit_model, tiny_cnn_model])
def test_scores_do_not_depend_on_the_batch(builder):
    model = builder()
    model.set_banks(torch.rand(2, 3, 64, 64))
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        together = model(images)
        alone = [model(images[i : i + 1]) for i in range(3)]
    torch.testing.assert_close(together.pred_score, torch.cat([a.pred_score for a in alone]))
    torch.testing.assert_close(together.anomaly_map, torch.cat([a.anomaly_map for a in alone]))
    assert together.anomaly_map.shape == (3, 1, 64, 64)


def test_banks_hold_every_shot_token_and_reload_with_another_k():
    model = tiny_vit_model()
    model.set_banks(torch.rand(3, 3, 64, 64))
    grid_tokens = model.grid**2
    window_tokens = model.windows_per_side**2 * model.window_size**2
    assert [b.shape[0] for b in model.banks()] == [3 * grid_tokens] * 2
    assert [b.shape[0] for b in model.banks(window=True)] == [3 * window_tokens] * 2
    fresh = tiny_vit_model()
    fresh.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(fresh(x).pred_score, model(x).pred_score)


def test_banks_without_shot_drop_exactly_that_shots_tokens():
    model = tiny_vit_model()
    shots = torch.rand(3, 3, 64, 64)
    model.set_banks(shots)
    with torch.no_grad():
        per_shot = [model.level_tokens(shots[i : i + 1]) for i in range(3)]
    for left_out in range(3):
        kept = [i for i in range(3) if i != left_out]
        expected = [torch.cat([per_shot[i][level][0] for i in kept]) for level in range(model.num_levels)]
        for got, want in zip(model.banks_without_shot(left_out, 3), expected, strict=True):
            torch.testing.assert_close(got, want)
    # one shot: nothing else to match against, the full banks
    assert all(g is b for g, b in zip(model.banks_without_shot(0, 1), model.banks(), strict=True))
    with pytest.raises(InvalidArgumentError, match="shot 3 of 3"):
        model.banks_without_shot(3, 3)


@pytest.mark.parametrize("train_bank", ["all", "leave_one_out"])
def test_pseudo_head_matches_each_sample_against_the_bank_its_train_bank_names(monkeypatch, train_bank: str):
    import anomalib_fewshot.models.fdsl.lightning_model as lightning_model

    config = {**TINY_CONFIGS["Fdsl"], "k_shot": 3, "train_bank": train_bank, "head_weights": None}
    torch.manual_seed(0)
    module = Fdsl(**config)
    shots = torch.rand(3, 3, 64, 64)
    module.prepare_fit(list(shots))
    net = module.model
    seen: list = []
    real_head_loss = lightning_model.head_loss

    def spy(model, loss, images, masks, banks):
        seen.append(banks)
        return real_head_loss(model, loss, images, masks, banks)

    picks: list[list[int]] = []
    real_batch = module._pseudo_batch

    def recording_batch(size):
        images, masks, sources = real_batch(size)
        picks.append(sources)
        return images, masks, sources

    monkeypatch.setattr(lightning_model, "head_loss", spy)
    monkeypatch.setattr(module, "_pseudo_batch", recording_batch)
    module.training_step(PoolBatch(indices=torch.arange(6)), 0)
    (banks,), (sources,) = seen, picks
    assert len(set(sources)) > 1
    for source, bank in zip(sources, banks, strict=True):
        expected = net.banks_without_shot(source, 3) if train_bank == "leave_one_out" else net.banks()
        for got, want in zip(bank, expected, strict=True):
            torch.testing.assert_close(got, want)


def test_positional_embedding_resize():
    embedding = torch.randn(1 + 24 * 24, 8)
    resized = resize_positional_embedding(embedding, 37)
    assert resized.shape == (1 + 37 * 37, 8)
    torch.testing.assert_close(resized[0], embedding[0])
    torch.testing.assert_close(resize_positional_embedding(embedding, 24), embedding)


def test_focal_and_dice_losses():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2] = 1
    perfect = torch.stack([1 - target.float(), target.float()], dim=1)
    assert float(focal_loss(perfect, target)) < 1e-4
    assert float(dice_loss(perfect[:, 1], target)) < 1e-6
    uniform = torch.full((1, 2, 4, 4), 0.5)
    # gamma 0, alpha 1: cross-entropy of p = 0.5 (+ smooth)
    assert float(focal_loss(uniform, target, gamma=0.0)) == pytest.approx(-np.log(0.5 + 1e-5), rel=1e-4)
    assert float(focal_loss(uniform, target)) == pytest.approx(0.25 * -np.log(0.5 + 1e-5), rel=1e-3)


def test_head_loss_trains_heads_and_nam_only():
    model = tiny_cnn_model(lfe=False).train()
    model.set_banks(torch.rand(2, 3, 64, 64))
    images, masks = torch.rand(2, 3, 64, 64), (torch.rand(2, 64, 64) > 0.8).float()
    loss = head_loss(model, FdslLoss(), images, masks, [model.banks()] * 2)
    loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained
    assert all(n.startswith(("heads.", "nam.")) for n in trained)
    assert any(n.startswith("nam.") for n in trained)
    assert not any(p.requires_grad for p in model.features.parameters())


def test_head_file_round_trip_and_errors(tmp_path: Path):
    model = tiny_vit_model()
    path = save_head_weights(model, tmp_path / "head.pt", {"trained_on": ["x"]})
    other = tiny_vit_model()
    assert load_head_weights(other, path) == {"trained_on": ["x"]}
    for a, b in zip(model.heads.state_dict().values(), other.heads.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(HeadWeightsError, match="trained for"):
        load_head_weights(tiny_vit_model(head_dims=[8, 8]), path)
    with pytest.raises(HeadWeightsError, match="not found"):
        load_head_weights(model, tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(HeadWeightsError, match=r"junk\.pt"):
        load_head_weights(model, tmp_path / "junk.pt")


def test_clip_tokens_load_a_local_state_dict(tmp_path: Path):
    source = ClipTokens(vision_cfg=TINY_VIT, layers=[1, 2], image_size=64, window_size=32, pre_trained=False)
    state = {f"visual.{k}": v for k, v in source.state_dict().items() if not k.startswith(("pos_", "mean", "std"))}
    state = {k.replace("visual.blocks.", "visual.transformer.resblocks."): v for k, v in state.items()}
    torch.save(state, tmp_path / "clip.pt")
    target = ClipTokens(
        vision_cfg=TINY_VIT, layers=[1, 2], image_size=64, window_size=32, weights_path=tmp_path / "clip.pt"
    )
    target.load_weights()
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(source(x), target(x), strict=True):
        torch.testing.assert_close(a, b)
    wrong = {k: v[..., :1] if v.ndim > 1 else v for k, v in state.items()}
    torch.save(wrong, tmp_path / "wrong.pt")
    bad = ClipTokens(
        vision_cfg=TINY_VIT, layers=[1, 2], image_size=64, window_size=32, weights_path=tmp_path / "wrong.pt"
    )
    with pytest.raises(WeightsError, match=r"wrong\.pt"):
        bad.load_weights()


def test_annotated_split_augmentations_keep_masks_aligned():
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    images[1, :, 8:16, 8:16] = 255
    masks[1, 8:16, 8:16] = True
    dataset = AnnotatedSplit(images, masks, [0, 0, 0, 0], augment="mosaic_crop", mosaic_rate=0.5, crop_rate=1.0, seed=3)
    for _ in range(20):
        for index in range(4):
            image, mask, category = dataset[index]
            assert image.shape == (3, 32, 32) and mask.shape == (32, 32) and category == 0
            bright = image.mean(0) > 0.5
            assert bool(((mask > 0.5) == bright).float().mean() > 0.9)  # the defect moves with its mask
            if index == 1 and mask.sum() == 0:
                pytest.fail("an anomalous image lost its anomaly pixels in a crop")


@pytest.mark.slow
def test_pretrain_head_then_fit_with_the_file_and_export(tmp_path: Path, tiny_data_root: Path):
    cfg = TINY_CONFIGS["Fdsl"]
    model_kwargs = {k: cfg[k] for k in MODEL_KEYS}
    datamodule = MVTecAD(root=tiny_data_root, category="tiny", num_workers=0)
    head = pretrain_head(
        [datamodule],
        tmp_path / "head.pt",
        model_kwargs=model_kwargs,
        epochs=2,
        batch_size=4,
        reference_k=2,
        progress=False,
    )
    payload = torch.load(head, weights_only=True)
    assert payload["metadata"]["trained_on"] == ["MVTecAD:tiny"] and payload["metadata"]["steps"] > 0

    model = Fdsl(**cfg, head_weights=str(head))
    engine = Engine(default_root_dir=tmp_path / "run", logger=False, enable_progress_bar=False)
    data = MVTecAD(root=tiny_data_root, category="tiny", num_workers=0, train_batch_size=2, eval_batch_size=4)
    engine.fit(model, datamodule=data)
    assert model.head_metadata["trained_on"] == ["MVTecAD:tiny"]
    reference = Fdsl(**cfg)
    load_head_weights(reference.model, head)
    for (name, a), b in zip(
        model.model.heads.state_dict().items(), reference.model.heads.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)  # the fit used the file and changed nothing
    metrics = engine.test(model, datamodule=data)[0]
    assert np.isfinite(metrics["image_AUROC"])

    exported = engine.export(
        model, ExportType.OPENVINO, export_root=tmp_path / "export", onnx_kwargs={"opset_version": 18}
    )
    inferencer = OpenVINOInferencer(path=exported, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    images = torch.rand(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        eager = model(images)
    result = inferencer.predict(images.numpy())
    np.testing.assert_allclose(
        np.asarray(result.pred_score).reshape(-1), eager.pred_score.numpy().reshape(-1), atol=1e-2
    )


@pytest.mark.slow
def test_fdsl_pretrain_cli(tmp_path: Path, tiny_data_root: Path):
    from anomalib_fewshot.cli import main

    config = tmp_path / "fdsl.yaml"
    init_args = {k: TINY_CONFIGS["Fdsl"][k] for k in MODEL_KEYS}
    config.write_text(json.dumps({"model": {"class_path": "anomalib_fewshot.models.Fdsl", "init_args": init_args}}))
    output = tmp_path / "head.pt"
    argv = ["fdsl-pretrain", "--config", str(config), "--data", "MVTecAD", "--data-root", str(tiny_data_root)]
    argv += [
        "--categories",
        "tiny",
        "--output",
        str(output),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--reference-k",
        "2",
    ]
    assert main(argv) == 0
    assert load_head_weights(tiny_vit_model(), output)["epochs"] >= 1
    with pytest.raises(SystemExit, match="not an anomalib datamodule"):
        main(["fdsl-pretrain", "--data", "NoSuchData", "--output", str(tmp_path / "x.pt")])


def test_residual_gap_rows():
    from anomalib_fewshot.models.fdsl.residual_gap import residual_gap

    torch.manual_seed(0)
    module = Fdsl(**{**TINY_CONFIGS["Fdsl"], "k_shot": 2})
    shots = torch.rand(2, 3, 64, 64)
    rows = residual_gap(module, shots, normals=shots, views_per_shot=2)
    inference = rows["new normal images, bank of all shots (inference)"]
    left_out = rows["training views, bank without their shot (leave_one_out)"]
    assert max(inference) < 1e-5  # a shot is its own nearest neighbour
    assert min(left_out) > 0.1  # without its shot, a view has only another random image to match
    assert len(inference) == len(left_out) == module.model.num_levels
    one = residual_gap(module, shots[:1], normals=shots[1:], views_per_shot=2)
    assert not any("leave_one_out" in name for name in one)
