from __future__ import annotations

import pytest
import torch

from anomalib_fewshot.components.anomalies import (
    PerlinImageAnomaly,
    foreground_mask,
    resolve_foreground,
)
from anomalib_fewshot.models.dfd.loss import DfdLoss, gaussian_loss, perlin_loss, similarity_loss
from anomalib_fewshot.models.dfd.torch_model import DfdModel


def tiny_dfd_model(**overrides) -> DfdModel:
    """A random-weight DFD on EfficientNet-Lite0 at 64 px, token dimension 16."""
    kwargs = {
        "backbone": "tf_efficientnet_lite0",
        "layers": ("blocks.2", "blocks.4"),
        "pre_trained": False,
        "image_size": 64,
        "pretrain_embed_dim": 16,
        "target_embed_dim": 16,
        "gaussian_hidden_dim": 8,
        "perlin_num_heads": 2,
    }
    return DfdModel(**{**kwargs, **overrides})


def test_gaussian_loss_values():
    normal = torch.tensor([1.0, 0.0])  # second is inside the margin: 0.5
    noisy = torch.tensor([-1.0, 0.2])  # second: 0.5 + 0.2
    assert gaussian_loss(normal, noisy, 0.5).item() == pytest.approx(0.25 + 0.35)


def test_perlin_loss_perfect_prediction_is_small():
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, :, 2:4, 2:4] = 1
    logits = torch.where(masks > 0, torch.tensor(-20.0), torch.tensor(20.0))
    labels = torch.tensor([1.0, 0.0])
    assert perlin_loss(logits, masks, labels).item() < 1e-6
    assert perlin_loss(-logits, masks, labels).item() > 1.0


def test_perlin_loss_without_anomalies_uses_normal_term():
    masks = torch.zeros(1, 1, 4, 4)
    logits = torch.zeros(1, 1, 4, 4)
    # pix = mean(relu(0.5 - 0)) = 0.5; cls = (sigmoid(0) - 0)^2 = 0.25
    assert perlin_loss(logits, masks, torch.tensor([0.0])).item() == pytest.approx(0.5 * 0.5 + 0.5 * 0.25)


def test_similarity_loss_modes():
    a = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    b = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    mask = torch.tensor([[False, True]])
    assert similarity_loss(a, b, mask, "cosine").item() == pytest.approx(0.0)
    assert similarity_loss(a, a, mask, "cosine").item() == pytest.approx(1.0)
    assert similarity_loss(a, a, mask, "one_minus_cosine").item() == pytest.approx(0.0)
    assert similarity_loss(a, b, torch.zeros_like(mask), "cosine").item() == 0.0


def test_loss_arguments_validated():
    with pytest.raises(ValueError, match=r"similarity must be one of \('cosine', 'one_minus_cosine'\), got 'bogus'"):
        DfdLoss(similarity="bogus")


def test_perlin_anomaly_masks_and_labels():
    torch.manual_seed(0)
    image = torch.rand(3, 64, 64)
    generator = PerlinImageAnomaly(probability=1.0)
    augmented, mask, label = generator(image)
    assert label.item() == float(mask.amax() > 0)
    assert mask.shape == (1, 64, 64)
    assert torch.equal(augmented * (1 - mask), image * (1 - mask))
    fg = torch.zeros(1, 64, 64)
    _, mask, label = generator(image, fg)
    assert mask.sum() == 0
    assert label.item() == 0.0
    _, mask, label = PerlinImageAnomaly(probability=0.0)(image)
    assert label.item() == 0.0
    assert mask.sum() == 0


def test_perlin_anomaly_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="probability"):
        PerlinImageAnomaly(probability=1.5)
    with pytest.raises(ValueError, match="not a folder"):
        PerlinImageAnomaly(anomaly_source_path=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="holds no images"):
        PerlinImageAnomaly(anomaly_source_path=str(tmp_path))


def test_foreground_modes():
    image = torch.zeros(3, 8, 8)
    image[:, 2:6, 2:6] = 1.0
    bright = foreground_mask(image, "bright")
    assert bright.sum() == 16
    assert torch.equal(foreground_mask(image, "dark"), 1 - bright)
    assert foreground_mask(image, "none").sum() == 64
    assert resolve_foreground("auto", "bottle") == "dark"
    assert resolve_foreground("auto", "hazelnut") == "bright"
    assert resolve_foreground("auto", "carpet") == "none"
    assert resolve_foreground("auto", None) == "none"
    with pytest.raises(ValueError, match="foreground"):
        resolve_foreground("sideways", None)


@pytest.mark.parametrize("paths", ["low_high", "low", "high", "full"])
@pytest.mark.parametrize(
    ("gaussian", "perlin", "head"), [(True, True, "vit"), (False, True, "mlp"), (True, False, "vit")]
)
def test_dfd_model_variants_forward(paths, gaussian, perlin, head):
    model = tiny_dfd_model(
        perlin_head=head,
        frequency_paths=paths,
        use_gaussian_discriminator=gaussian,
        use_perlin_discriminator=perlin,
    )
    tokens = model(torch.rand(3, 3, 64, 64))
    assert tokens.shape == (model.num_paths * 3, 64, 16)
    out = model.eval()(torch.rand(3, 3, 64, 64))
    assert out.pred_score.shape == (3,)
    assert out.anomaly_map.shape == (3, 1, 64, 64)
    assert torch.isfinite(out.anomaly_map).all()


def test_dfd_model_argument_errors():
    kwargs = {"backbone": "tf_efficientnet_lite0", "layers": ("blocks.2", "blocks.4"), "pre_trained": False}
    with pytest.raises(ValueError, match="at least one"):
        DfdModel(**kwargs, use_gaussian_discriminator=False, use_perlin_discriminator=False)
    with pytest.raises(ValueError, match="frequency_paths"):
        DfdModel(**kwargs, frequency_paths="mid")
    with pytest.raises(ValueError, match="multiple of 8"):
        DfdModel(**kwargs, image_size=60)
    with pytest.raises(ValueError, match="divisible"):
        DfdModel(**kwargs, target_embed_dim=30, perlin_num_heads=4)
    with pytest.raises(ValueError, match="perlin_weight"):
        DfdModel(**kwargs, perlin_weight=1.5)


def test_perlin_weight_mixes_the_normalised_branches():
    model = tiny_dfd_model().eval()
    for norm, (scale, shift, low, high) in ((model.gaussian_norm, (2.0, 1.0, 0.0, 4.0)),
                                            (model.perlin_norm, (0.5, -3.0, 1.0, 2.0))):  # fmt: skip
        norm.map_scale.fill_(scale), norm.map_shift.fill_(shift), norm.score_min.fill_(low), norm.score_max.fill_(high)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        maps = model.branch_maps(model.embed(model.backbone_features(images)), (64, 64))
        alone = {
            name: (norm.normalize_score(maps[name].amax(dim=(1, 2, 3))), norm.normalize_map(maps[name]))
            for name, norm in (("gaussian", model.gaussian_norm), ("perlin", model.perlin_norm))
        }
        for weight in (0.0, 0.5, 0.8, 1.0):
            model.perlin_weight = weight
            out = model(images)
            for got, index in ((out.pred_score, 0), (out.anomaly_map, 1)):
                expected = (1 - weight) * alone["gaussian"][index] + weight * alone["perlin"][index]
                assert torch.allclose(got, expected, atol=1e-5), weight
    # the default is the code's plain average of the two branches
    assert tiny_dfd_model().perlin_weight == 0.5


@pytest.mark.parametrize("head", ["vit", "mlp"])
def test_perlin_discriminator_init_follows_the_code_or_xavier(head: str):
    from anomalib_fewshot.models.dfd.torch_model import PerlinDiscriminator

    dim = 256
    torch.manual_seed(0)
    code = PerlinDiscriminator(dim, 16, num_heads=4, head=head, init="code")
    torch.manual_seed(0)
    xavier = PerlinDiscriminator(dim, 16, num_heads=4, head=head, init="xavier")
    bound = 1 / dim**0.5  # PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for layer in (code.stem[0], code.out) + ((code.mlp[0],) if head == "mlp" else ()):
        assert float(layer.weight.abs().max()) <= bound
    # Xavier-normal: std sqrt(2 / (fan_in + fan_out)) = 1/16 for the 256 x 256 stem, beyond the default's bound
    assert float(xavier.stem[0].weight.std()) == pytest.approx((2 / (2 * dim)) ** 0.5, rel=0.05)
    assert float(xavier.stem[0].weight.abs().max()) > 3 * bound
    if head == "vit":
        assert float(code.cls_token.abs().max()) < 1e-5  # N(0, 1e-6)
        assert float(xavier.cls_token.std()) == pytest.approx(0.02, rel=0.2)
        for model in (code, xavier):  # the ViT itself as timm's (and the code's) init in both
            assert float(model.pos_embed.std()) == pytest.approx(0.02, rel=0.1)
            qkv = model.blocks[0].attn.qkv
            assert float(qkv.weight.std()) == pytest.approx(0.02, rel=0.1) and float(qkv.bias.abs().max()) == 0.0


def test_dfd_model_passes_perlin_init():
    model = tiny_dfd_model(perlin_init="xavier")
    assert float(model.perlin.cls_token.abs().max()) > 1e-3  # trunc-normal(0.02), not the code's N(0, 1e-6)
