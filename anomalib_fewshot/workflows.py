"""End-to-end workflows used by the ``anomalib-fewshot`` command and the examples."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

DEMO_CATEGORY = "plate"


def f32_openvino_config() -> dict[str, str]:
    """OpenVINO compile config that keeps f32 precision (some CPUs default to bf16)."""
    return {"INFERENCE_PRECISION_HINT": "f32"}


def save_heatmap(image_path: str | Path, anomaly_map: Any, output: str | Path) -> Path:
    """Save ``image | heat-map overlay`` side by side with anomalib's visualisation functions."""
    import numpy as np
    from anomalib.visualization.image.functional import overlay_image, visualize_anomaly_map
    from PIL import Image

    image = Image.open(image_path).convert("RGB")
    amap = np.asarray(anomaly_map, dtype=np.float32).squeeze()
    heat = visualize_anomaly_map(amap, colormap=True, normalize=True).resize(image.size)
    canvas = Image.new("RGB", (image.width * 2, image.height))
    canvas.paste(image, (0, 0))
    canvas.paste(overlay_image(image, heat, alpha=0.5), (image.width, 0))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(output)
    return output


def run_demo(
    output: str | Path = "anomalib_fewshot_demo",
    profile: str = "dfd_lite",
    k_shot: int = 1,
    seed: int = 0,
    epochs: int | None = None,
    samples_per_shot: int | None = None,
) -> dict[str, Any]:
    """Generate the demo data, train, test, export to OpenVINO and run the exported model on one image."""
    from anomalib.data import MVTecAD
    from anomalib.deploy import ExportType, OpenVINOInferencer
    from anomalib.engine import Engine

    from anomalib_fewshot.config import model_init_args
    from anomalib_fewshot.data.demo import make_demo_dataset
    from anomalib_fewshot.models import Dfd

    output = Path(output)
    data_root = output / "data"
    make_demo_dataset(data_root, DEMO_CATEGORY)
    overrides: dict[str, Any] = {"k_shot": k_shot, "few_shot_seed": seed}
    if epochs is not None:
        overrides["epochs"] = epochs
    if samples_per_shot is not None:
        overrides["samples_per_shot"] = samples_per_shot
    model = Dfd(**model_init_args(profile, **overrides))
    datamodule = MVTecAD(root=data_root, category=DEMO_CATEGORY, num_workers=0, eval_batch_size=8)
    engine = Engine(default_root_dir=output / "results", logger=False)
    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    metrics = engine.test(model, datamodule=datamodule)[0]
    export_path = engine.export(model, ExportType.OPENVINO, onnx_kwargs={"opset_version": 18})
    inferencer = OpenVINOInferencer(export_path, device="CPU", config=f32_openvino_config())
    image = sorted((data_root / DEMO_CATEGORY / "test" / "scratch").glob("*.png"))[0]
    prediction = inferencer.predict(image)
    heatmap = save_heatmap(image, prediction.anomaly_map, output / "heatmap_openvino.png")
    return {
        "metrics": {k: round(float(v), 4) for k, v in metrics.items()},
        "fit_seconds": round(fit_seconds, 1),
        "run_dir": str(engine.trainer.default_root_dir),
        "openvino_model": str(export_path),
        "openvino_example": {
            "image": str(image),
            "pred_score": float(prediction.pred_score.reshape(-1)[0]),
            "pred_label": bool(prediction.pred_label.reshape(-1)[0]),
            "heatmap": str(heatmap),
        },
        "shots": model.few_shot_record["shots"] if model.few_shot_record else None,
    }
