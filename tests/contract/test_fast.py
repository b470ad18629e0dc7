"""Fast contract tier: every registered model, prepared without a fit (no trainer, no data files), in seconds.

Parametrised over the registry with each model's tiny configuration (``ModelSpec.tiny_config``):

- the torch model's ``prepare(images)`` computes the state a fit would (prototypes, banks, references, score
  statistics) from the given images, and the eval forward depends on that state;
- the eval forward gives finite scores and raw (not post-processed) maps of the input's size that vary in space;
- one training step through the Lightning module's own fit API (``prepare_fit`` then ``training_step``) gives
  every trainable parameter a finite, non-zero gradient, and leaves the frozen extractor's parameters without one;
- the whole Lightning module (pre-processor, model) exports to ONNX (torch.export, static shapes), and OpenVINO
  reproduces the raw outputs.

The slow tier (``test_models.py``) fits each model through ``Engine`` and checks the deployed pipeline end to end.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import openvino as ov
import pytest
import torch

from anomalib_fewshot.components.lifecycle.pool import PoolBatch
from anomalib_fewshot.models import REGISTRY
from tests.helpers import TINY_CONFIGS

MODEL_NAMES = list(REGISTRY)
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random images in ``[0, 1]`` (noise upsampled from 8 px, so CNN features are not pure noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def _build(name: str) -> Any:
    """The Lightning module of ``name`` with its tiny configuration (seeded: the same weights every call)."""
    torch.manual_seed(0)
    return REGISTRY[name].model_class(**TINY_CONFIGS[name])


class Case:
    """One model's tiny module, its shots and test images (module scope: built once per model)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.module = _build(name)
        self.size = int(self.module.hparams.image_size)
        self.k = int(TINY_CONFIGS[name].get("k_shot") or 2)
        self.shots = _images(self.k, self.size, seed=0)
        self.others = _images(self.k, self.size, seed=1)
        self.test_images = _images(3, self.size, seed=2)

    def prepared(self, images: torch.Tensor) -> torch.nn.Module:
        """A copy of the torch model prepared on ``images``, in eval mode."""
        net = copy.deepcopy(self.module.model)
        net.prepare(images)
        return net.eval()


@pytest.fixture(scope="module", params=MODEL_NAMES)
def case(request) -> Case:
    return Case(request.param)


def _frozen(name: str) -> bool:
    """Parameters of the frozen pretrained extractor (every model's ``backbone``; FDSL's ``features``)."""
    return name.startswith(("model.backbone", "model.features"))


def test_prepare_then_forward_gives_raw_outputs(case: Case):
    net = case.prepared(case.shots)
    with torch.no_grad():
        output = net(case.test_images)
    n, size = len(case.test_images), case.size
    assert output.pred_score.reshape(-1).shape == (n,)
    assert output.anomaly_map.shape[-2:] == (size, size)
    assert output.anomaly_map.numel() == n * size * size
    assert torch.isfinite(output.pred_score).all()
    assert torch.isfinite(output.anomaly_map).all()
    assert output.anomaly_map.reshape(n, -1).std(1).min() > 0, "a raw anomaly map is constant"


def test_prepare_sets_the_state_the_forward_uses(case: Case):
    """Prepared on other images, the same weights score the same test images differently."""
    with torch.no_grad():
        on_shots = case.prepared(case.shots)(case.test_images).anomaly_map
        on_others = case.prepared(case.others)(case.test_images).anomaly_map
        again = case.prepared(case.shots)(case.test_images).anomaly_map
    torch.testing.assert_close(again, on_shots, rtol=1e-5, atol=1e-6)  # deterministic
    scale = float(on_shots.abs().max())
    assert float((on_shots - on_others).abs().max()) > 1e-4 * scale, "prepare(images) does not change the maps"


def test_training_step_gives_every_trainable_parameter_a_gradient(case: Case):
    module = _build(case.name)
    plan = module.prepare_fit(list(case.shots))
    assert plan.pool_size >= 1
    assert plan.batch_size >= 1
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    assert trainable, "the model has no trainable parameters"
    assert not any(_frozen(n) for n in trainable), "the frozen extractor has trainable parameters"
    # no module.train(): Lightning's fit keeps each submodule's mode as the model set it (frozen extractor: eval)
    seen: set[str] = set()
    # a step per pool batch (at most 4): some objectives need an anomalous sample in the batch
    starts = range(0, min(plan.pool_size, 4 * plan.batch_size), plan.batch_size)
    for start in starts:
        indices = torch.arange(start, start + plan.batch_size) % plan.pool_size
        output = module.training_step(PoolBatch(indices=indices), 0)
        assert output is not None, f"{case.name}'s tiny configuration makes no training step"
        loss = output["loss"]
        assert torch.isfinite(loss), f"loss {loss}"
        module.zero_grad()
        loss.backward()
        seen |= {
            n for n, p in trainable.items() if p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any()
        }
        if seen == set(trainable):
            break
    assert seen == set(trainable), f"no gradient: {sorted(set(trainable) - seen)}"
    frozen = [n for n, p in module.named_parameters() if _frozen(n) and p.grad is not None]
    assert not frozen, f"the frozen extractor got gradients: {frozen[:5]}"
    module.release_fit()


def test_calibration_from_the_stored_shots_sets_the_decision_the_module_ships(case: Case):
    """After ``prepare_fit``/``finish_fit`` the module calibrates from its stored shots alone: finite thresholds in
    the post-processor, and the whole module's ``pred_label`` is the raw score compared with the image threshold."""
    from anomalib_fewshot.components.lifecycle.quantization import pack_shots

    module = _build(case.name)
    module.prepare_fit(list(case.shots))
    module.calibration_shots = pack_shots(list(case.shots))
    module.finish_fit()
    calibration = module.calibrate()
    post = module.post_processor
    for name in ("image_threshold", "pixel_threshold", "image_min", "image_max", "pixel_min", "pixel_max"):
        assert torch.isfinite(getattr(post, name)), name
    assert post.image_threshold.item() == pytest.approx(calibration.image_threshold, rel=1e-6)
    assert calibration.image_min <= calibration.image_threshold <= calibration.image_max or (
        calibration.image_threshold < calibration.image_min  # the F1 rule may flag every view
    )
    module.eval()
    with torch.no_grad():
        raw = module.model(case.test_images).pred_score.reshape(-1)
        shipped = module(case.test_images).pred_label.reshape(-1)
    assert shipped.tolist() == (raw > calibration.image_threshold).tolist()
    module.release_fit()


def test_the_z_image_score_is_fitted_by_calibration_saved_and_exported(case: Case):
    """``image_score="z"``: the calibration fits its statistics, the thresholds are set on its scores, the shipped
    ``pred_score`` is the rule applied to the model's own score and map, a state dict carries it, and torch.export
    reproduces it."""
    from anomalib_fewshot.components.lifecycle.quantization import pack_shots

    torch.manual_seed(0)
    module = REGISTRY[case.name].model_class(**{**TINY_CONFIGS[case.name], "image_score": "z"})
    module.prepare_fit(list(case.shots))
    module.calibration_shots = pack_shots(list(case.shots))
    module.finish_fit()
    calibration = module.calibrate()
    rule = module.model.image_score
    assert rule.normal_mean.shape[-2:] == (case.size, case.size)
    module.eval()
    with torch.no_grad():
        out = module.model(case.test_images)
        with rule.bypassed():
            own = module.model(case.test_images).pred_score
        shipped = module(case.test_images).pred_label.reshape(-1)
    torch.testing.assert_close(out.pred_score, rule(own, out.anomaly_map))
    assert not torch.allclose(out.pred_score, own), "the rule did not change the image score"
    assert shipped.tolist() == (out.pred_score.reshape(-1) > calibration.image_threshold).tolist()
    torch.manual_seed(0)
    loaded = REGISTRY[case.name].model_class(**{**TINY_CONFIGS[case.name], "image_score": "z"})
    loaded.load_state_dict(module.state_dict())  # the statistics' buffers take the saved shape
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(case.test_images).pred_score, out.pred_score)
    module.post_processor = None
    program = torch.export.export(module, (case.test_images,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(case.test_images).pred_score, out.pred_score, rtol=1e-4, atol=1e-5)
    module.release_fit()


def _raw_module(case: Case) -> tuple[torch.nn.Module, torch.Tensor, dict[str, torch.Tensor]]:
    """The prepared whole module without post-processor, export inputs and its eager raw outputs on them."""
    module = copy.deepcopy(case.module)
    module.model = case.prepared(case.shots)
    module.post_processor = None  # raw outputs: the sensitive comparison (post-processed maps are clamped)
    module.eval()
    images = _images(2, case.size + 10, seed=3)  # the module's pre-processor resizes to the model's size
    with torch.no_grad():
        expected = {k: v for k, v in module(images)._asdict().items() if isinstance(v, torch.Tensor)}
    return module, images, expected


def test_torch_export_gives_one_static_graph_that_reproduces_the_raw_outputs(case: Case):
    """torch.export of the whole module (what anomalib's ONNX export traces first): no data-dependent branch breaks
    it, and the exported program computes the eager raw outputs. The ONNX -> OpenVINO step is the slow tier's."""
    module, images, expected = _raw_module(case)
    program = torch.export.export(module, (images,))
    with torch.no_grad():
        outputs = program.module()(images)
    for key in ("pred_score", "anomaly_map"):
        torch.testing.assert_close(getattr(outputs, key), expected[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
def test_exports_to_onnx_and_openvino_reproduces_the_raw_outputs(case: Case, tmp_path):
    """torch.export -> ONNX of the whole module (pre-processor and model), static shapes for speed.

    ``Engine.export`` with anomalib's dynamic shapes is checked in ``test_models.py``.
    """
    module, images, expected = _raw_module(case)
    path = tmp_path / "model.onnx"
    torch.onnx.export(
        module, (images,), str(path), dynamo=True, optimize=False, opset_version=18, output_names=list(expected)
    )
    assert path.is_file()
    compiled = ov.Core().compile_model(str(path), "CPU", F32)
    result = compiled(images.numpy())
    outputs = {port.get_any_name(): value for port, value in result.items()}
    for key in ("pred_score", "anomaly_map"):
        wanted = expected[key].numpy()
        got = np.asarray(outputs[key]).reshape(wanted.shape)
        scale = float(np.abs(wanted).max())
        np.testing.assert_allclose(got, wanted, atol=1e-3 * max(scale, 1e-6), rtol=1e-3, err_msg=key)
