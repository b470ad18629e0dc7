"""ED building blocks: exact median, Gaussian-prior targets, positions, switches, loss detach pattern, invariance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine

from anomalib_fewshot.components.lifecycle.lightning import FitPlan
from anomalib_fewshot.models.ed import Ed, EdModel
from anomalib_fewshot.models.ed.loss import EdLoss, entropy
from anomalib_fewshot.models.ed.torch_model import (
    EncoderLayer,
    LevelTransformer,
    MedianFeedForward,
    PriorAttention,
    lower_median,
    reconstruction_score,
    sincos_position_embedding,
    squared_grid_distances,
    symmetric_kl,
)
from tests.helpers import TINY_CONFIGS

TINY_MODEL = {k: v for k, v in TINY_CONFIGS["Ed"].items() if k in ("backbone", "layers", "pre_trained", "image_size",
                                                                   "d_models", "num_heads", "num_layers")}  # fmt: skip


@pytest.mark.parametrize(
    ("shape", "dim"), [((2, 1024, 3), 1), ((2, 256, 5), 1), ((3, 7, 4), 1), ((4, 6), 0), ((5, 9), 1)]
)
def test_lower_median_equals_torch_median(shape, dim):
    x = torch.randn(*shape)
    torch.testing.assert_close(lower_median(x, dim), torch.median(x, dim=dim).values, rtol=0, atol=0)


def test_lower_median_with_ties():
    x = torch.tensor([[1.0, 1.0, 2.0, 2.0], [3.0, 0.0, 3.0, 0.0]])
    torch.testing.assert_close(lower_median(x, 1), torch.median(x, dim=1).values)


def test_squared_grid_distances_broadcast_to_the_pairwise_matrices():
    height, width = 3, 5
    dist_y, dist_x = squared_grid_distances(height, width)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.flatten().float(), xs.flatten().float()
    pair_y = (ys[:, None] - ys[None]) ** 2
    pair_x = (xs[:, None] - xs[None]) ** 2
    j = torch.arange(height * width)
    torch.testing.assert_close(dist_y[:, j // width], pair_y)
    torch.testing.assert_close(dist_x[:, j % width], pair_x)


def test_prior_attention_target_equals_the_explicit_pairwise_gaussian():
    torch.manual_seed(0)
    grid = (4, 6)
    length = grid[0] * grid[1]
    attention = PriorAttention(dim=16, num_heads=2, grid=grid)
    x = torch.randn(2, length, 16)
    out, attn, target = attention(x, x)
    assert out.shape == (2, length, 16)
    assert attn.shape == target.shape == (2, 2, length, length)
    # the reference formula: sigma from the query, full (L, L) squared distances, 1/(2πσ₁σ₂) prefactor, row norm
    sigma = torch.sigmoid(5.0 * attention.sigma(x)) + 1e-5
    sigma = (torch.pow(3.0, sigma) - 1.0).reshape(2, length, 2, 2).permute(0, 3, 1, 2)
    s_y, s_x = sigma[..., 0:1], sigma[..., 1:2]
    ys, xs = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    ys, xs = ys.flatten().float(), xs.flatten().float()
    d_y, d_x = (ys[:, None] - ys[None]) ** 2, (xs[:, None] - xs[None]) ** 2
    explicit = torch.exp(-d_y / (2 * s_y**2) - d_x / (2 * s_x**2)) / (2 * math.pi * s_y * s_x)
    explicit = explicit / explicit.sum(-1, keepdim=True)
    torch.testing.assert_close(target, explicit, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, length))


def test_prior_attention_scale_is_learnable_and_initialised_to_inverse_sqrt_head_dim():
    attention = PriorAttention(dim=32, num_heads=8, grid=(2, 2))
    assert isinstance(attention.scale, torch.nn.Parameter)
    assert attention.scale.item() == pytest.approx(1 / math.sqrt(4))
    with pytest.raises(ValueError, match="num_heads"):
        PriorAttention(dim=30, num_heads=8, grid=(2, 2))


def test_sincos_positions_encode_x_then_y():
    pos = sincos_position_embedding(3, 4, 16)
    assert pos.shape == (12, 16)
    grid = pos.reshape(3, 4, 16)
    # first half depends on x only, second half on y only
    torch.testing.assert_close(grid[0, :, :8], grid[2, :, :8])
    torch.testing.assert_close(grid[:, 0, 8:], grid[:, 3, 8:])
    assert not torch.allclose(grid[0, 0, :8], grid[0, 1, :8])
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_position_embedding(2, 2, 6)


def test_switches_build_the_documented_variants():
    ed = EncoderLayer(16, 2, (4, 4), 4, 0.0, "d2fusion", "median_dwconv")
    assert ed.fusion[0].in_features == 32 and ed.fusion[0].out_features == 64
    assert hasattr(ed.ffn, "dwconv") and ed.ffn.scaling.shape == (64,)
    fod = EncoderLayer(16, 2, (4, 4), 4, 0.0, "difference", "mlp")
    assert not hasattr(fod, "fusion")
    assert not hasattr(fod.ffn, "dwconv")
    x, ref = torch.randn(2, 16, 16), torch.randn(2, 16, 16)
    for layer in (ed, fod):
        out, maps = layer(x, ref)
        assert out.shape == x.shape
        assert len(maps) == 4
    with pytest.raises(ValueError, match="fusion"):
        EncoderLayer(16, 2, (4, 4), 4, 0.0, "sum", "mlp")
    with pytest.raises(ValueError, match="kind must be one of"):
        MedianFeedForward(16, 4, (4, 4), 0.0, "conv")


def test_difference_fusion_is_self_minus_cross():
    torch.manual_seed(0)
    layer = EncoderLayer(16, 2, (2, 2), 4, 0.0, "difference", "mlp").eval()
    x, ref = torch.randn(1, 4, 16), torch.randn(1, 4, 16)
    self_out, _, _ = layer.intra(x, x)
    cross_out, _, _ = layer.inter(x, ref)
    fused = layer.norm1((x + self_out) - (x + cross_out))
    expected = layer.norm2(fused + layer.ffn(fused))
    torch.testing.assert_close(layer(x, ref)[0], expected)


def test_median_ffn_adds_the_scaled_token_median():
    torch.manual_seed(0)
    ffn = MedianFeedForward(8, 2, (3, 3), 0.0, "median_dwconv")
    with torch.no_grad():
        ffn.scaling.fill_(2.0)
    x = torch.randn(2, 9, 8)
    hidden = ffn.fc1(x).transpose(1, 2).reshape(2, 16, 3, 3)
    hidden = torch.nn.functional.gelu(ffn.dwconv(hidden).flatten(2).transpose(1, 2))
    expected = ffn.fc2(hidden + 2.0 * hidden.median(dim=1, keepdim=True).values)
    torch.testing.assert_close(ffn(x), expected)


def test_symmetric_kl_and_entropy():
    p = torch.softmax(torch.randn(3, 5), -1)
    assert torch.allclose(symmetric_kl(p, p), torch.zeros(3), atol=1e-6)
    q = torch.softmax(torch.randn(3, 5), -1)
    torch.testing.assert_close(symmetric_kl(p, q), symmetric_kl(q, p))
    assert (symmetric_kl(p, q) > 0).all()
    # the inference map's one-logarithm form is the same sum (peaked attention maps, as ED's)
    p, q = torch.softmax(torch.randn(2, 64, 64) * 4, -1), torch.softmax(torch.randn(2, 64, 64) * 4, -1)
    torch.testing.assert_close(symmetric_kl(p, q, one_log=True), symmetric_kl(p, q), rtol=1e-6, atol=0)
    uniform = torch.full((2, 4), 0.25)
    assert entropy(uniform).item() == pytest.approx(math.log(4), abs=1e-3)


def _level_outputs(seed: int = 0):
    torch.manual_seed(seed)
    level = LevelTransformer(12, 16, 2, 2, (3, 3))
    tokens = torch.randn(2, 9, 12)
    reference = torch.randn(9, 12)
    reconstruction, maps = level(tokens, reference)
    return level, tokens, reconstruction, maps


def _grad_norms(level: LevelTransformer, loss: torch.Tensor) -> dict[str, float]:
    level.zero_grad()
    loss.backward(retain_graph=True)
    norms: dict[str, float] = {"sigma": 0.0, "attention": 0.0}
    for name, param in level.named_parameters():
        if param.grad is None or "layers" not in name:
            continue
        if ".sigma." in name:
            norms["sigma"] += param.grad.abs().sum().item()
        elif name.startswith(f"layers.{len(level.layers) - 1}.") and (".query." in name or ".key." in name):
            # earlier layers' attention feeds later layers' sigma through x (as in the reference code)
            norms["attention"] += param.grad.abs().sum().item()
    return norms


def test_loss_detach_pattern_targets_and_attention_trained_by_different_objectives():
    level, tokens, reconstruction, maps = _level_outputs()
    terms = EdLoss()(tokens, reconstruction, maps)
    # loss1 minus the reconstruction term trains the Gaussian targets (sigma projections), not the attention maps
    first = _grad_norms(level, terms["loss1"] - terms["rec"])
    assert first["sigma"] > 0 and first["attention"] == 0
    # loss2 minus the reconstruction term trains only the attention (query/key), never the targets
    second = _grad_norms(level, terms["loss2"] - terms["rec"])
    assert second["sigma"] == 0 and second["attention"] > 0
    torch.testing.assert_close(terms["total"], terms["loss1"] + terms["loss2"])


def test_loss_switches_drop_their_terms():
    _, tokens, reconstruction, maps = _level_outputs()
    off = EdLoss(use_intra=False, use_inter=False)(tokens, reconstruction, maps)
    torch.testing.assert_close(off["loss1"], off["rec"])
    torch.testing.assert_close(off["loss2"], off["rec"])
    intra_only = EdLoss(use_inter=False)(tokens, reconstruction, maps)
    assert not torch.allclose(intra_only["loss1"], intra_only["rec"])


def _tiny_model(**kwargs) -> EdModel:
    torch.manual_seed(0)
    model = EdModel(**{**TINY_MODEL, **kwargs})
    images = torch.rand(3, 3, 64, 64)
    model.set_references(model.raw_tokens(images))
    return model.eval()


def test_references_are_registered_buffers_in_the_state_dict():
    model = _tiny_model()
    state = model.state_dict()
    assert {"reference_0", "reference_1", "reference_ready"} <= set(state)
    assert bool(state["reference_ready"])
    # the distance grids and positions are computed in code, not stored
    assert not any("dist_" in key or "position" in key for key in state)


def test_eval_scores_every_image_on_its_own():
    model = _tiny_model()
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        together = model(images)
        alone = [model(images[i : i + 1]) for i in range(3)]
    torch.testing.assert_close(together.pred_score, torch.cat([a.pred_score for a in alone]), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(together.anomaly_map, torch.cat([a.anomaly_map for a in alone]), rtol=1e-4, atol=1e-6)
    assert together.anomaly_map.shape == (3, 1, 64, 64)
    torch.testing.assert_close(together.pred_score, together.anomaly_map.amax(dim=(1, 2, 3)))


def test_inter_score_is_max_minus_softmax_per_image():
    model = _tiny_model()
    tokens = model.tokens(torch.rand(2, 3, 64, 64))
    (reconstruction, maps), _ = model.reconstruct(tokens)
    score = model.level_score(tokens[0], reconstruction, maps)
    corrs = torch.stack([symmetric_kl(m[2], m[3]) for m in maps]).mean(0).mean(1)
    weights = torch.softmax(-corrs, -1)
    for i in range(2):
        inter = weights[i].max() - weights[i]
        rec = (
            (tokens[0][i] - reconstruction[i]).pow(2).mean(-1)
            + 1
            - torch.cosine_similarity(tokens[0][i], reconstruction[i], dim=-1)
        )
        torch.testing.assert_close(score[i], rec * inter)
    model.anomaly_map = "rec"  # the ablation switch: the reconstruction error alone
    torch.testing.assert_close(
        model.level_score(tokens[0], reconstruction, maps), reconstruction_score(tokens[0], reconstruction)
    )


def test_inter_exponent_weights_the_inter_factor():
    model = _tiny_model()
    tokens = model.tokens(torch.rand(2, 3, 64, 64))
    (reconstruction, maps), _ = model.reconstruct(tokens)
    rec = reconstruction_score(tokens[0], reconstruction)
    inter = model.level_score(tokens[0], reconstruction, maps) / rec  # γ = 1: ED's factor
    model.inter_exponent = 0.5
    torch.testing.assert_close(model.level_score(tokens[0], reconstruction, maps), rec * inter.sqrt())
    model.inter_exponent = 0.0  # the factor drops out: the reconstruction error alone
    torch.testing.assert_close(model.level_score(tokens[0], reconstruction, maps), rec)
    with pytest.raises(ValueError, match="inter_exponent"):
        EdModel(**{**TINY_MODEL, "inter_exponent": 1.5})


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match="d_models"):
        EdModel(**{**TINY_MODEL, "d_models": [16]})
    with pytest.raises(ValueError, match="augment"):
        Ed(**{**TINY_CONFIGS["Ed"], "augment": "mixup"})
    with pytest.raises(ValueError, match="epochs"):
        Ed(**{**TINY_CONFIGS["Ed"], "epochs": 0})
    with pytest.raises(ValueError, match="steps"):
        Ed(**{**TINY_CONFIGS["Ed"], "steps": 0})
    with pytest.raises(ValueError, match="anomaly_map"):
        Ed(**{**TINY_CONFIGS["Ed"], "anomaly_map": "inter"})


def test_steps_fix_the_schedule_whatever_the_pool():
    plan = FitPlan(pool_size=32, batch_size=1)  # k = 4 shots x 8 copies
    assert Ed(**{**TINY_CONFIGS["Ed"], "epochs": 80, "steps": None}).epochs_for(plan) == 80
    model = Ed(**{**TINY_CONFIGS["Ed"], "epochs": 80, "steps": 640})
    assert model.epochs_for(plan) == 20
    assert model.epochs_for(FitPlan(pool_size=8, batch_size=1)) == 80  # k = 1: the same 640 steps
    assert model.epochs_for(FitPlan(pool_size=24, batch_size=1)) == 27  # k = 3: rounded up to whole epochs
    assert model.epochs_for(FitPlan(pool_size=32, batch_size=4)) == 80


@pytest.mark.slow  # fits through Engine
def test_a_fit_with_steps_makes_that_many_steps(tmp_path: Path, tiny_data_root: Path):
    # tiny profile: 2 shots x 2 copies at batch 2 = 2 batches per epoch; 5 steps -> 3 epochs (6 steps), not 50
    model = Ed(**{**TINY_CONFIGS["Ed"], "epochs": 50, "steps": 5})
    datamodule = MVTecAD(root=tiny_data_root, category="tiny", num_workers=0, eval_batch_size=4)
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    assert engine.trainer.global_step == 6
    assert engine.trainer.current_epoch == 3


@pytest.mark.slow
def test_full_shot_references_are_the_mean_of_every_training_image(tmp_path: Path, tiny_data_root: Path):
    config = {**TINY_CONFIGS["Ed"], "k_shot": None, "augment": "none", "augment_copies": 1, "epochs": 1}
    model = Ed(**config)
    datamodule = MVTecAD(root=tiny_data_root, category="tiny", num_workers=0, eval_batch_size=4)
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False, max_epochs=1)
    engine.fit(model, datamodule=datamodule)
    assert len(model.few_shot_record["shots"]) == 4
    datamodule.setup("fit")
    images = []
    for item in datamodule.train_data:
        image = item.image.float()
        images.append(model.pre_processor.transform(image / 255.0 if image.max() > 1 else image).clamp(0, 1))
    images = torch.stack(images)
    expected = [t.mean(0) for t in model.model.tokens(images)]
    for reference, mean in zip(model.model.references(), expected, strict=True):
        torch.testing.assert_close(reference, mean, rtol=1e-4, atol=1e-5)


def test_rms_token_scale_is_fitted_from_the_raw_tokens_and_stored():
    torch.manual_seed(0)
    model = EdModel(**TINY_MODEL, token_scale="rms").eval()
    images = torch.rand(3, 3, 64, 64)
    raw = model.raw_tokens(images)
    model.set_references(raw)
    for index, tokens in enumerate(raw):
        rms = tokens.pow(2).mean().sqrt()
        torch.testing.assert_close(model.scales()[index], rms)
        torch.testing.assert_close(model.references()[index], tokens.mean(0) / rms)
        torch.testing.assert_close(model.tokens(images)[index], tokens / rms)
    assert {"scale_0", "scale_1"} <= set(model.state_dict())
    plain = _tiny_model()
    assert all(float(s) == 1.0 for s in plain.scales())
    with pytest.raises(ValueError, match="token_scale"):
        EdModel(**TINY_MODEL, token_scale="std")
    with pytest.raises(ValueError, match="rms"):
        EdModel(**TINY_MODEL, token_scale="rms").set_references([t.mean(0) for t in raw])
