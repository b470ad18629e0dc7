"""Contract suite: every plugin model behaves like a native anomalib model (fit/test/predict/export/reload).

Parametrised over ``anomalib_fewshot.models.__all__``: a new model is covered as soon as it is exported
(and must get a tiny configuration in ``tests/helpers.py``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import MVTecAD
from anomalib.deploy import ExportType, OpenVINOInferencer
from anomalib.engine import Engine
from lightning.pytorch import Callback

import anomalib_fewshot.models as plugin_models
from anomalib_fewshot.components.lifecycle.fewshot import SHOT_FILE_NAME
from tests.helpers import RAW_PARITY_RTOL, TINY_CONFIGS, assert_close_to_range, raw_outputs

pytestmark = pytest.mark.slow
MODEL_NAMES = list(plugin_models.__all__)
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def test_every_model_has_a_tiny_config():
    assert set(MODEL_NAMES) <= set(TINY_CONFIGS)


def _frozen(name: str) -> bool:
    """Modules of the frozen pretrained extractor (every model's ``backbone``; FDSL's ``features``)."""
    return name.startswith(("model.backbone", "model.features"))


class _GradientRecorder(Callback):
    """Records which trainable parameters received a gradient, and frozen modules found in training mode."""

    def __init__(self) -> None:
        self.with_grad: set[str] = set()
        self.frozen_in_training_mode: set[str] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        del trainer, batch, batch_idx
        self.frozen_in_training_mode |= {n for n, m in pl_module.named_modules() if _frozen(n) and m.training}

    def on_after_backward(self, trainer, pl_module) -> None:
        for name, param in pl_module.named_parameters():
            if param.requires_grad and param.grad is not None and torch.isfinite(param.grad).all():
                if param.grad.abs().sum() > 0:
                    self.with_grad.add(name)


class Fitted:
    """One fitted model per model name (module scope), shared by the tests below."""

    def __init__(self, name: str, root: Path, data_root: Path) -> None:
        self.name = name
        self.root = root
        self.model = getattr(plugin_models, name)(**TINY_CONFIGS[name])
        self.initial = {k: v.detach().clone() for k, v in self.model.named_parameters() if v.requires_grad}
        self.initial_frozen_buffers = {k: v.clone() for k, v in self.model.named_buffers() if _frozen(k)}
        self.recorder = _GradientRecorder()
        self.datamodule = MVTecAD(root=data_root, category="tiny", num_workers=0, train_batch_size=2, eval_batch_size=4)
        self.engine = Engine(
            default_root_dir=root,
            logger=False,
            callbacks=[self.recorder],
            enable_progress_bar=False,
        )
        self.engine.fit(self.model, datamodule=self.datamodule)
        self.run_dir = Path(self.engine.trainer.default_root_dir)
        self.ckpt = self.engine.best_model_path or str(self.run_dir / "weights" / "lightning" / "model.ckpt")


@pytest.fixture(scope="module", params=MODEL_NAMES)
def fitted(request, tmp_path_factory, tiny_data_root) -> Fitted:
    return Fitted(request.param, tmp_path_factory.mktemp(request.param), tiny_data_root)


def _images(n: int, height: int = 70, width: int = 90, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, height, width, generator=generator)


def test_fit_writes_checkpoint_and_shots(fitted: Fitted):
    assert Path(fitted.ckpt).is_file()
    record = json.loads((fitted.run_dir / SHOT_FILE_NAME).read_text())
    assert len(record["shots"]) == TINY_CONFIGS[fitted.name]["k_shot"]
    assert record["few_shot_seed"] == 0
    assert "anomalib_fewshot_version" in record
    checkpoint = torch.load(fitted.ckpt, map_location="cpu", weights_only=True)
    assert checkpoint["few_shot"]["shots"] == record["shots"]
    # the datamodule got its full training set back after the fit
    assert len(fitted.datamodule.train_data) == 4


def test_every_trainable_parameter_gets_a_gradient_and_changes(fitted: Fitted):
    trainable = {n for n, p in fitted.model.named_parameters() if p.requires_grad}
    assert trainable, "model has no trainable parameters"
    assert trainable == fitted.recorder.with_grad, f"no gradient: {sorted(trainable - fitted.recorder.with_grad)}"
    params = dict(fitted.model.named_parameters())
    unchanged = [n for n, v in fitted.initial.items() if torch.equal(v, params[n].detach().cpu())]
    assert not unchanged, f"parameters unchanged by the fit: {unchanged}"


def test_frozen_backbone_stays_frozen(fitted: Fitted):
    """The pretrained extractor runs in eval mode during training: no BatchNorm statistic follows the shots."""
    assert not fitted.recorder.frozen_in_training_mode, sorted(fitted.recorder.frozen_in_training_mode)[:5]
    buffers = dict(fitted.model.named_buffers())
    running = [k for k in fitted.initial_frozen_buffers if "running_" in k]
    changed = [k for k in running if not torch.equal(fitted.initial_frozen_buffers[k], buffers[k].cpu())]
    assert not changed, f"frozen statistics changed by the fit: {changed[:5]}"


def test_test_validate_predict(fitted: Fitted):
    metrics = fitted.engine.test(fitted.model, datamodule=fitted.datamodule, ckpt_path=fitted.ckpt)[0]
    assert {"image_AUROC", "pixel_AUROC"} <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    fitted.engine.validate(fitted.model, datamodule=fitted.datamodule, ckpt_path=fitted.ckpt)
    predictions = fitted.engine.predict(fitted.model, datamodule=fitted.datamodule, ckpt_path=fitted.ckpt)
    maps = torch.cat([p.anomaly_map for p in predictions])
    scores = torch.cat([p.pred_score.reshape(-1) for p in predictions])
    assert torch.isfinite(maps).all()
    assert torch.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    # normalised scores and maps are clamped to [0, 1] (a tiny random model's test images may all lie beyond the
    # calibration's range, every score 1): check the raw outputs vary
    images = torch.cat([p.image for p in predictions])
    model = fitted.model.eval()
    with torch.no_grad():
        raw_output = model.model(model.pre_processor(images))
    raw = raw_output.anomaly_map
    assert torch.isfinite(raw).all()
    assert raw_output.pred_score.std() > 0, "every raw image score is the same"
    assert raw.flatten(1).std(1).min() > 0, "a raw anomaly map is constant"


def test_train_runs_fit_and_test(fitted: Fitted, tmp_path: Path, tiny_data_root: Path):
    model = getattr(plugin_models, fitted.name)(**TINY_CONFIGS[fitted.name])
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    datamodule = MVTecAD(root=tiny_data_root, category="tiny", num_workers=0, eval_batch_size=4)
    engine.train(model, datamodule=datamodule)
    assert engine.trainer.global_step > 0  # the shots trained the model (LearningType.FEW_SHOT would skip it)
    metrics = {key: float(value) for key, value in engine.trainer.callback_metrics.items()}
    assert {"image_AUROC", "pixel_AUROC"} <= set(metrics), sorted(metrics)
    # the reported metrics are those of the fitted model's own predictions on the test split
    from torchmetrics.classification import BinaryAUROC

    batches = engine.predict(model, dataloaders=datamodule.test_dataloader())
    scores = torch.cat([b.pred_score.reshape(-1) for b in batches])
    labels = torch.cat([b.gt_label.reshape(-1) for b in batches]).int()
    maps = torch.cat([b.anomaly_map.reshape(-1) for b in batches])
    masks = torch.cat([b.gt_mask.reshape(-1) for b in batches]).int()
    assert 0 < int(labels.sum()) < len(labels)
    assert metrics["image_AUROC"] == pytest.approx(float(BinaryAUROC()(scores, labels)), abs=1e-6)
    assert metrics["pixel_AUROC"] == pytest.approx(float(BinaryAUROC()(maps, masks)), abs=1e-6)


def test_reload_from_checkpoint_weights_only(fitted: Fitted):
    cls = type(fitted.model)
    reloaded = cls.load_from_checkpoint(fitted.ckpt, weights_only=True).eval()
    original = fitted.model.eval()
    images = _images(2)
    with torch.no_grad():
        a, b = original(images), reloaded(images)
    raw_a, raw_b = raw_outputs(original, images), raw_outputs(reloaded, images)
    torch.testing.assert_close(raw_a.pred_score, raw_b.pred_score, rtol=1e-6, atol=0)
    torch.testing.assert_close(raw_a.anomaly_map, raw_b.anomaly_map, rtol=1e-6, atol=0)
    assert float(raw_a.anomaly_map.std()) > 0
    torch.testing.assert_close(a.pred_score, b.pred_score)
    torch.testing.assert_close(a.anomaly_map, b.anomaly_map)
    assert reloaded.few_shot_record == original.few_shot_record


# OpenVINO export goes through the ONNX export; the raw maps are checked on the ONNX file (the sensitive check:
# normalised maps are clamped), the whole deployed pipeline on the OpenVINO IR.
@pytest.mark.parametrize(
    ("export_type", "post_processing"),
    [(ExportType.ONNX, False), (ExportType.OPENVINO, True)],
    ids=["onnx-raw", "openvino-normalised"],
)
def test_export_parity(fitted: Fitted, tmp_path: Path, export_type: ExportType, post_processing: bool):
    model = copy.deepcopy(fitted.model).eval()
    if not post_processing:
        model.post_processor = None
    engine = Engine(default_root_dir=tmp_path, logger=False)
    kwargs = {"onnx_kwargs": {"opset_version": 18}}
    path = engine.export(model, export_type, export_root=tmp_path, **kwargs)
    inferencer = OpenVINOInferencer(path, device="CPU", config=F32)
    for batch_size in (1, 3):
        images = _images(batch_size, seed=batch_size)
        with torch.no_grad():
            expected = model(images)
        result = inferencer.predict(images)
        got_map = np.asarray(result.anomaly_map).reshape(batch_size, -1)
        expected_map = expected.anomaly_map.reshape(batch_size, -1).numpy()
        if post_processing:  # normalised to [0, 1] (partly clamped)
            np.testing.assert_allclose(
                np.asarray(result.pred_score).reshape(-1), expected.pred_score.reshape(-1).numpy(), atol=1e-2
            )
            np.testing.assert_allclose(got_map, expected_map, atol=1e-2)
        else:  # raw: any scale, so the tolerance follows the map's range
            assert_close_to_range(got_map, expected_map)
            scores = np.asarray(result.pred_score).reshape(-1)
            np.testing.assert_allclose(scores, expected.pred_score.reshape(-1).numpy(), rtol=0,
                                       atol=RAW_PARITY_RTOL * float(np.ptp(expected_map)))  # fmt: skip


def test_export_torch(fitted: Fitted, tmp_path: Path):
    engine = Engine(default_root_dir=tmp_path, logger=False)
    path = engine.export(fitted.model, ExportType.TORCH, export_root=tmp_path)
    assert Path(path).is_file()
    loaded = torch.load(path, map_location="cpu", weights_only=False)["model"].eval()
    images = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).pred_score, fitted.model.eval()(images).pred_score)
    raw_loaded, raw_fitted = raw_outputs(loaded, images), raw_outputs(fitted.model, images)
    assert float(raw_fitted.anomaly_map.std()) > 0
    torch.testing.assert_close(raw_loaded.pred_score, raw_fitted.pred_score, rtol=1e-6, atol=0)
    torch.testing.assert_close(raw_loaded.anomaly_map, raw_fitted.anomaly_map, rtol=1e-6, atol=0)


def test_int8_export_from_the_checkpoint_alone_calibrates_on_the_stored_shots(
    fitted: Fitted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Anomalib's ``INT8_PTQ`` export of a checkpoint, with no datamodule and no image file opened, quantises the graph.

    Anomalib's own step would calibrate on the validation loader (the test split by default); ours uses the shots
    the fit stored in the checkpoint.
    """
    import openvino as ov
    import PIL.Image
    from anomalib.deploy import CompressionType

    from anomalib_fewshot.components.lifecycle.quantization import CALIBRATION_KEY
    from anomalib_fewshot.errors import InvalidArgumentError

    stored = torch.load(fitted.ckpt, map_location="cpu", weights_only=True)[CALIBRATION_KEY]
    assert stored.dtype == torch.uint8 and len(stored) == TINY_CONFIGS[fitted.name]["k_shot"]
    model = type(fitted.model).load_from_checkpoint(fitted.ckpt, weights_only=True).eval()
    assert torch.equal(model.calibration_shots, stored)

    def no_image(*args, **kwargs):
        raise AssertionError("an INT8 export from a checkpoint must not open any image file")

    monkeypatch.setattr(PIL.Image, "open", no_image)
    engine = Engine(default_root_dir=tmp_path, logger=False)
    kwargs = {"onnx_kwargs": {"opset_version": 18}, "export_root": tmp_path / "int8"}
    path = engine.export(model, ExportType.OPENVINO, compression_type=CompressionType.INT8_PTQ, **kwargs)
    ops = [op.get_type_name() for op in ov.Core().read_model(path).get_ops()]
    assert ops.count("FakeQuantize") > 0, "the exported graph is not quantised"
    result = OpenVINOInferencer(path, device="CPU", config=F32).predict(_images(1))
    assert np.isfinite(np.asarray(result.anomaly_map)).all()
    with pytest.raises(InvalidArgumentError, match="INT8_ACQ"):
        engine.export(model, ExportType.OPENVINO, compression_type=CompressionType.INT8_ACQ, **kwargs)
    model.calibration_shots = None  # a checkpoint written before the shots were stored
    with pytest.raises(InvalidArgumentError, match="fit it again"):
        engine.export(model, ExportType.OPENVINO, compression_type=CompressionType.INT8_PTQ, **kwargs)
