"""Shared fixtures of the reliability suite: one tiny fitted model (and its OpenVINO export) per plugin model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import anomalib_fewshot.models as plugin_models
from tests.helpers import TINY_IMAGE_SIZE, fit_tiny

MODEL_NAMES = list(plugin_models.__all__)
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


@dataclass
class FittedModel:
    """A fitted tiny model, its engine, checkpoint and (lazily) exported files."""

    name: str
    model: Any
    engine: Any
    root: Path
    exports: dict[str, Path] = field(default_factory=dict)

    @property
    def ckpt(self) -> Path:
        return Path(self.engine.trainer.default_root_dir) / "weights" / "lightning" / "model.ckpt"

    def export(self, kind: str) -> Path:
        """``kind``: ``torch``, ``onnx``, ``openvino`` (normalised), ``onnx_raw``, ``openvino_raw`` (raw)."""
        if kind not in self.exports:
            import copy

            from anomalib.deploy import ExportType
            from anomalib.engine import Engine

            model = copy.deepcopy(self.model).eval()
            if kind.endswith("_raw"):
                model.post_processor = None
            export_type = {"torch": ExportType.TORCH, "onnx": ExportType.ONNX}.get(
                kind.split("_")[0], ExportType.OPENVINO
            )
            root = self.root / f"export_{kind}"
            kwargs = {} if kind == "torch" else {"onnx_kwargs": {"opset_version": 18}}
            engine = Engine(default_root_dir=root, logger=False)
            self.exports[kind] = Path(engine.export(model, export_type, export_root=root, **kwargs))
        return self.exports[kind]


@pytest.fixture(scope="session")
def fitted_cache(tmp_path_factory: pytest.TempPathFactory, tiny_data_root: Path) -> dict[str, FittedModel]:
    """Lazily filled: one fit per model for the whole session."""
    del tmp_path_factory, tiny_data_root
    return {}


@pytest.fixture(params=MODEL_NAMES)
def fitted(request, fitted_cache, tmp_path_factory, tiny_data_root) -> FittedModel:
    """The session's fitted tiny model of each plugin model (parametrised over every exported model)."""
    name = request.param
    if name not in fitted_cache:
        root = tmp_path_factory.mktemp(f"fit_{name}")
        model, engine = fit_tiny(name, tiny_data_root, root)
        fitted_cache[name] = FittedModel(name, model.eval(), engine, root)
    return fitted_cache[name]


def plate(size: int = TINY_IMAGE_SIZE, seed: int = 3) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image of the demo part."""
    from anomalib_fewshot.data.demo import _plate

    return np.asarray(_plate(np.random.default_rng(seed), size))


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per input case of the matrix (the demo part in every format, and broken files)."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    rgb = plate()
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    files = {
        "rgb": folder / "rgb.png",
        "grayscale": folder / "grayscale.png",
        "rgba": folder / "rgba.png",
        "16bit": folder / "grey16.png",
        "grey8": folder / "grey8.png",
        "large": folder / "large.png",
        "tiny": folder / "tiny.png",
        "zero_byte": folder / "zero.png",
        "truncated": folder / "truncated.png",
        "not_an_image": folder / "notes.png",
    }
    Image.fromarray(rgb).save(files["rgb"])
    Image.fromarray(rgb).convert("L").save(files["grayscale"])
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])).save(files["rgba"])
    Image.fromarray(grey.astype(np.uint16) * 257).save(files["16bit"])  # the same grey values in 16 bits
    Image.fromarray(grey).save(files["grey8"])
    Image.fromarray(rgb).resize((5000, 4000), Image.Resampling.BILINEAR).save(files["large"], compress_level=1)
    Image.fromarray(plate(16)).save(files["tiny"])
    files["zero_byte"].write_bytes(b"")
    files["truncated"].write_bytes(files["rgb"].read_bytes()[:300])
    files["not_an_image"].write_text("operator notes, saved with the wrong extension\n")
    return files
