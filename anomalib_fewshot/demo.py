"""The ``anomalib-fewshot demo`` verb: generated data, fit, test, OpenVINO export and a heat-map gallery."""

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

    from anomalib_fewshot.components.io.images import read_preview

    image = read_preview(image_path)
    amap = np.asarray(anomaly_map, dtype=np.float32).squeeze()
    heat = visualize_anomaly_map(amap, colormap=True, normalize=True).resize(image.size)
    canvas = Image.new("RGB", (image.width * 2, image.height))
    canvas.paste(image, (0, 0))
    canvas.paste(overlay_image(image, heat, alpha=0.5), (image.width, 0))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(output)
    return output


#: The demo's default model: the one that meets the demo's time and accuracy bar (README "Two commands", measured).
DEMO_MODEL = "Pcsnet"
#: Test images per row of the demo gallery (good row, defective row).
GALLERY_COLUMNS = 4


def demo_gallery(
    inferencer: Any, good: list[Path], defective: list[Path], output: str | Path, tile: int = 256
) -> tuple[Path, list[dict[str, Any]]]:
    """Predict ``good`` and ``defective`` images with ``inferencer``; save them as a two-row heat-map gallery.

    Each tile is the image with its anomaly map overlaid (post-processed map in [0, 1], the same colour scale for
    every tile, so a good image stays cold) and its normalised score and label written on it. Anomalib's
    post-processor normalises scores so that the image threshold is 0.5: the label is ``score > 0.5``. The threshold
    was set from the shots alone (normal views and synthetic defects, never the test or validation images).

    Returns:
        The gallery path and one ``{"image", "truth", "pred_score", "pred_label"}`` record per tile.

    """
    import numpy as np
    from anomalib.visualization.image.functional import (
        add_text_to_image,
        create_image_grid,
        overlay_image,
        visualize_anomaly_map,
    )
    from PIL import Image

    from anomalib_fewshot.components.io.images import read_preview

    tiles, records = [], []
    for truth, paths in (("good", good), ("defective", defective)):
        for path in paths:
            prediction = inferencer.predict(path)
            score = float(np.asarray(prediction.pred_score).reshape(-1)[0])
            label = bool(np.asarray(prediction.pred_label).reshape(-1)[0])
            amap = np.clip(np.asarray(prediction.anomaly_map, dtype=np.float32).squeeze(), 0.0, 1.0)
            image = read_preview(path).resize((tile, tile))
            heat = visualize_anomaly_map(amap, colormap=True, normalize=False).resize(image.size)
            text = f"{truth}: score {score:.2f} -> {'DEFECT' if label else 'good'}"
            tiles.append(add_text_to_image(overlay_image(image, heat, alpha=0.5), text, size=max(10, tile // 18)))
            # the map's mean says more than the score when a weak model's scores all saturate at 1.0
            records.append(
                {
                    "image": str(path),
                    "truth": truth,
                    "pred_score": round(score, 4),
                    "pred_label": label,
                    "map_mean": round(float(amap.mean()), 4),
                }
            )
    columns = max(len(good), len(defective))
    blank = Image.new("RGB", (tile, tile))
    rows = [*tiles[: len(good)], *[blank] * (columns - len(good)), *tiles[len(good) :]]
    rows += [blank] * (2 * columns - len(rows))
    tiles_grid = create_image_grid(rows, nrow=columns)
    grid = Image.new("RGB", (tiles_grid.width, tiles_grid.height + tile // 8))  # a caption strip below the tiles
    grid.paste(tiles_grid, (0, 0))
    caption = (
        "top: good test images, bottom: defective; label = normalised score > 0.5 "
        "(threshold set from the shots alone, no defect seen)"
    )
    grid = add_text_to_image(grid, caption, size=max(10, tile // 20), position=(10, tiles_grid.height + tile // 40))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(output)
    return output, records


def _demo_test_images(data_root: Path, category: str, per_row: int) -> tuple[list[Path], list[Path]]:
    """The first ``per_row`` good test images and ``per_row`` defective ones, taken in turn from each defect type."""
    test = data_root / category / "test"
    good = sorted((test / "good").glob("*.png"))[:per_row]
    kinds = [sorted(d.glob("*.png")) for d in sorted(test.iterdir()) if d.is_dir() and d.name != "good"]
    defective = [path for batch in zip(*kinds, strict=False) for path in batch][:per_row]
    return good, defective


def run_demo(
    output: str | Path = "anomalib_fewshot_demo",
    model: str = DEMO_MODEL,
    profile: str | None = None,
    k_shot: int = 1,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate the demo data, train ``model``, test, export to OpenVINO, predict and draw a heat-map gallery.

    Args:
        output: folder for the data, anomalib's run folder, the OpenVINO model, ``gallery.png``.
        model: a plugin model's class name (``Dfd``, ``Pcsnet``, ``Ed``, ``Fdsl``).
        profile: a config of ``configs/model`` (default: the model's offline lite profile).
        k_shot: number of good training images the model learns from.
        seed: few-shot seed (which shots).
        overrides: constructor arguments replacing the profile's (for example ``{"epochs": 2}``).
        progress: show Lightning's progress bar.

    Returns:
        Metrics, fit time, paths (run folder, OpenVINO model, gallery) and the OpenVINO predictions.

    """
    from anomalib.data import MVTecAD
    from anomalib.deploy import ExportType, OpenVINOInferencer
    from anomalib.engine import Engine

    from anomalib_fewshot.config import model_init_args
    from anomalib_fewshot.data.demo import make_demo_dataset
    from anomalib_fewshot.errors import InvalidArgumentError
    from anomalib_fewshot.models import REGISTRY

    if model not in REGISTRY:
        msg = f"--model {model!r}: choose one of {', '.join(REGISTRY)}"
        raise InvalidArgumentError(msg)
    spec = REGISTRY[model]
    profile = profile or spec.lite_profile
    output = Path(output)
    data_root = output / "data"
    make_demo_dataset(data_root, DEMO_CATEGORY)
    args = model_init_args(profile, **{"k_shot": k_shot, "few_shot_seed": seed, **(overrides or {})})
    try:
        module = spec.model_class(**args)
    except TypeError as exc:  # an override the model does not take
        msg = f"{model} ({profile}) does not take these arguments: {exc}"
        raise InvalidArgumentError(msg) from exc
    datamodule = MVTecAD(root=data_root, category=DEMO_CATEGORY, num_workers=0, eval_batch_size=8)
    engine = Engine(default_root_dir=output / "results", logger=False, enable_progress_bar=progress)
    start = time.perf_counter()
    engine.fit(module, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    metrics = engine.test(module, datamodule=datamodule)[0]
    export_path = engine.export(module, ExportType.OPENVINO, onnx_kwargs={"opset_version": 18})
    inferencer = OpenVINOInferencer(export_path, device="CPU", config=f32_openvino_config())
    good, defective = _demo_test_images(data_root, DEMO_CATEGORY, GALLERY_COLUMNS)
    gallery, predictions = demo_gallery(inferencer, good, defective, output / "gallery.png")
    example = next(p for p in predictions if p["truth"] == "defective")
    heatmap = save_heatmap(example["image"], inferencer.predict(example["image"]).anomaly_map,
                           output / "heatmap_openvino.png")  # fmt: skip
    return {
        "model": model,
        "profile": profile,
        "metrics": {k: round(float(v), 4) for k, v in metrics.items()},
        "fit_seconds": round(fit_seconds, 1),
        "run_dir": str(engine.trainer.default_root_dir),
        "openvino_model": str(export_path),
        "gallery": str(gallery),
        "openvino_example": {**example, "heatmap": str(heatmap)},
        "openvino_predictions": predictions,
        "shots": module.few_shot_record["shots"] if module.few_shot_record else None,
    }
