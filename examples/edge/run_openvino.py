"""Run an exported anomalib_fewshot model on an edge PC with only openvino, numpy and pillow installed.

    pip install openvino numpy pillow
    python run_openvino.py weights/openvino/model.xml part.png --heatmap part_heatmap.png

Prints the anomaly score (0..1, > 0.5 means anomalous), the label and where the heat-map was saved. The exported
graph contains resizing, the model and anomalib's normalisation, so the raw RGB image goes in as it is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import openvino as ov
from PIL import Image


def _jet(values: np.ndarray) -> np.ndarray:
    """Map ``values`` in [0, 1] to RGB uint8 with a jet-like colormap (no matplotlib needed)."""
    v = np.clip(values, 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="model.xml exported by anomalib export --export_type openvino")
    parser.add_argument("image", type=Path)
    parser.add_argument("--heatmap", type=Path, default=None, help="where to save image|overlay (PNG)")
    parser.add_argument("--device", default="CPU")
    args = parser.parse_args()

    if not args.model.is_file():
        parser.error(f"model file not found: {args.model}")
    try:
        image = Image.open(args.image).convert("RGB")
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read image {args.image}: {exc}")

    core = ov.Core()
    compiled = core.compile_model(str(args.model), args.device, {"INFERENCE_PRECISION_HINT": "f32"})
    tensor = (np.asarray(image, dtype=np.float32) / 255.0).transpose(2, 0, 1)[None]
    result = compiled(tensor)
    outputs = {port.get_any_name(): value for port, value in result.items()}
    score = float(np.asarray(outputs["pred_score"]).reshape(-1)[0])
    label = bool(np.asarray(outputs["pred_label"]).reshape(-1)[0]) if "pred_label" in outputs else score > 0.5
    report = {"image": str(args.image), "pred_score": round(score, 4), "anomalous": label}

    if args.heatmap is not None and "anomaly_map" in outputs:
        amap = np.asarray(outputs["anomaly_map"], dtype=np.float32).squeeze()
        heat = Image.fromarray(_jet(amap)).resize(image.size, Image.BILINEAR)
        canvas = Image.new("RGB", (image.width * 2, image.height))
        canvas.paste(image, (0, 0))
        canvas.paste(Image.blend(image, heat, 0.5), (image.width, 0))
        args.heatmap.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(args.heatmap)
        report["heatmap"] = str(args.heatmap)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
