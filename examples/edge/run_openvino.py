"""Run an exported anomalib_fewshot model on an edge PC with only openvino, numpy and pillow installed.

    pip install openvino numpy pillow
    python run_openvino.py weights/openvino/model.xml part.png --heatmap heatmaps/
    python run_openvino.py weights/openvino/model.xml incoming/ --heatmap heatmaps/   # every image in a folder

Prints one JSON line per image: the anomaly score (0..1, > 0.5 means anomalous), the label and where the
heat-map was saved. The exported graph contains resizing, the model and anomalib's normalisation, so the RGB
image goes in at its own size. What cameras and file shares deliver is handled here: grayscale, RGBA and 16-bit
images are converted (16-bit keeps its full range; ``Image.convert("RGB")`` would clip it to white), very large
frames are shrunk first (``--max-side``), and an unreadable file (empty, truncated, not an image) gets a JSON
line with an ``error`` naming it; the other images are still scored. Exit status: 0 all scored, 1 some images
could not be read, 2 bad arguments or model.

This script is self-contained on purpose (the edge PC has no anomalib_fewshot); inside Python with the package
installed, use ``anomalib_fewshot.deploy.FewShotInferencer``, which reads images the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import openvino as ov
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class UnreadableImageError(ValueError):
    """An image file that cannot be scored; the message names the file and the reason."""


def _jet(values: np.ndarray) -> np.ndarray:
    """Map ``values`` in [0, 1] to RGB uint8 with a jet-like colormap (no matplotlib needed)."""
    v = np.clip(values, 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def _shrink(image: Image.Image, max_side: int | None, resample: Image.Resampling, **kwargs: float) -> Image.Image:
    """``image`` with its longer side reduced to ``max_side`` (aspect kept); unchanged when it already fits."""
    if max_side is None or max(image.size) <= max_side:
        return image
    ratio = max_side / max(image.size)
    size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    return image.resize(size, resample, **kwargs)


def read_rgb(path: Path, max_side: int | None) -> tuple[np.ndarray, Image.Image]:
    """``(H, W, 3)`` float32 in [0, 1] and an 8-bit RGB preview of ``path`` (raises ``UnreadableImageError``)."""
    if not path.is_file() or path.stat().st_size == 0:
        reason = "file not found" if not path.is_file() else "file is empty (0 bytes)"
        raise UnreadableImageError(f"'{path}': {reason}")
    try:
        with Image.open(path) as probe:
            probe.verify()
        image = Image.open(path)
        image.load()
    except UnidentifiedImageError as exc:
        raise UnreadableImageError(f"'{path}': not an image file PIL can read (wrong extension?)") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImageError(f"'{path}': corrupt or truncated image ({exc})") from exc
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):  # 16/32-bit grey: scale, do not clip
        grey = np.asarray(image, dtype=np.float64)
        scale = (
            1.0 if image.mode == "F" else 65535.0 if image.mode.startswith("I;16") or grey.max() <= 65535 else 2**32 - 1
        )
        grey_image = Image.fromarray(np.clip(grey / scale, 0, 1).astype(np.float32))
        grey_image = _shrink(grey_image, max_side, Image.Resampling.BILINEAR)
        rgb = np.repeat(np.asarray(grey_image, dtype=np.float32)[..., None], 3, axis=-1)
    else:
        image = _shrink(image.convert("RGB"), max_side, Image.Resampling.LANCZOS, reducing_gap=2.0)
        rgb = np.asarray(image, dtype=np.float32) / 255.0
    return rgb, Image.fromarray((rgb * 255).round().astype(np.uint8))


def score(compiled: ov.CompiledModel, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Run the exported model on one ``(H, W, 3)`` image; returns its outputs by name."""
    result = compiled(np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]))
    return {port.get_any_name(): np.asarray(value) for port, value in result.items()}


def save_heatmap(preview: Image.Image, anomaly_map: np.ndarray, path: Path) -> None:
    """Write ``image | overlay`` side by side (written to a temporary name first, then renamed)."""
    heat = Image.fromarray(_jet(anomaly_map.astype(np.float32).squeeze())).resize(preview.size, Image.BILINEAR)
    canvas = Image.new("RGB", (preview.width * 2, preview.height))
    canvas.paste(preview, (0, 0))
    canvas.paste(Image.blend(preview, heat, 0.5), (preview.width, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    canvas.save(partial, format="PNG")
    partial.replace(path)


def expand(inputs: list[Path]) -> list[Path]:
    """Files as given, folders as their image files (sorted)."""
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(item)
    return files


def main(argv: list[str] | None = None) -> int:
    """Score every image; one JSON line each. Returns the exit status."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("model", type=Path, help="model.xml exported by anomalib export --export_type openvino")
    parser.add_argument("images", type=Path, nargs="+", help="image files and/or folders of images")
    parser.add_argument("--heatmap", type=Path, default=None, help="folder (or .png file for one image) for heat-maps")
    parser.add_argument("--max-side", type=int, default=1024, help="shrink larger images first (0: never)")
    parser.add_argument("--device", default="CPU")
    args = parser.parse_args(argv)

    if args.model.suffix != ".xml" or not args.model.is_file() or not args.model.with_suffix(".bin").is_file():
        parser.error(f"model not found: {args.model} (needs the .xml and its .bin, from anomalib export)")
    try:
        compiled = ov.Core().compile_model(str(args.model), args.device, {"INFERENCE_PRECISION_HINT": "f32"})
    except RuntimeError as exc:
        parser.error(f"cannot load the model {args.model} on {args.device}: {str(exc).splitlines()[0]}")
    files = expand(args.images)
    if not files:
        parser.error(f"no images found in {[str(p) for p in args.images]}")

    failed = 0
    used_names: set[str] = set()
    for path in files:
        try:
            rgb, preview = read_rgb(path, args.max_side or None)
        except UnreadableImageError as exc:
            failed += 1
            print(json.dumps({"image": str(path), "error": str(exc)}), flush=True)
            continue
        outputs = score(compiled, rgb)
        value = float(outputs["pred_score"].reshape(-1)[0])
        label = bool(outputs["pred_label"].reshape(-1)[0]) if "pred_label" in outputs else value > 0.5
        report = {"image": str(path), "pred_score": round(value, 4), "anomalous": label}
        if args.heatmap is not None and "anomaly_map" in outputs:
            single_file = len(files) == 1 and args.heatmap.suffix.lower() == ".png"
            name = f"{path.stem}_heatmap.png"
            if name in used_names:  # the same file name in two folders (e.g. good/000.png and crack/000.png)
                name = f"{path.parent.name}_{name}"
            used_names.add(name)
            target = args.heatmap if single_file else args.heatmap / name
            save_heatmap(preview, outputs["anomaly_map"], target)
            report["heatmap"] = str(target)
        print(json.dumps(report), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
