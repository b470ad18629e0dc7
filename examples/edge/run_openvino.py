"""Run an exported anomalib_fewshot model on an edge PC with only openvino, numpy and pillow installed.

    pip install openvino numpy pillow
    python run_openvino.py weights/openvino/model.xml part.png --heatmap heatmaps/
    python run_openvino.py weights/openvino/model.xml incoming/ --heatmap heatmaps/   # every image in a folder
    python run_openvino.py weights/openvino/model.xml incoming/ --mode throughput      # folders, streams
    python run_openvino.py weights/int8/model.xml incoming/ --mode throughput          # the INT8 export

Prints one JSON line per image (in input order): the anomaly score (0..1, > 0.5 means anomalous), the label and
where the heat-map was saved; then one summary line on stderr (images, seconds, images/s). ``--mode latency`` (the
default) runs one image at a time; ``--mode throughput`` keeps several inference requests in flight (OpenVINO's
THROUGHPUT hint and AsyncInferQueue) and reads the next images meanwhile: the images/s of a folder or stream.
``--precision`` sets the floating-point layers (f32 or bf16; an INT8 model is its own export, ``anomalib export
... --compression_type INT8_PTQ``). Compiled models are cached in ``--cache-dir`` (default: the user's cache
folder, ``$XDG_CACHE_HOME`` or ``~/.cache``, ``anomalib_fewshot/openvino``; ``--cache-dir none``: no cache), never
in the working directory. Per-image latency of the bare graph: ``benchmark_app -m model.xml -hint latency -api
sync -data_shape [1,3,256,256]`` (OpenVINO's tool).

The exported graph contains resizing, the model and anomalib's normalisation, so the RGB image goes in at its own
size. What cameras and file shares deliver is handled here: grayscale, RGBA and 16-bit
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
import os
import statistics
import sys
import time
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


def model_input(rgb: np.ndarray) -> np.ndarray:
    """``(1, 3, H, W)`` float32 from an ``(H, W, 3)`` image."""
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])


def outputs_by_name(result: object) -> dict[str, np.ndarray]:
    """An inference result (OpenVINO's port -> array mapping) by output name, copied."""
    return {port.get_any_name(): np.array(value) for port, value in result.items()}  # type: ignore[attr-defined]


def score(compiled: ov.CompiledModel, rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Run the exported model on one ``(H, W, 3)`` image; returns its outputs by name."""
    return outputs_by_name(compiled(model_input(rgb)))


def default_cache_dir() -> Path:
    """The user's cache folder for compiled models (``anomalib_fewshot.deploy.default_cache_dir``)."""
    if os.environ.get("ANOMALIB_FEWSHOT_CACHE"):
        return Path(os.environ["ANOMALIB_FEWSHOT_CACHE"])
    base = os.environ.get("LOCALAPPDATA") if os.name == "nt" else os.environ.get("XDG_CACHE_HOME")
    return Path(base or Path.home() / ".cache") / "anomalib_fewshot" / "openvino"


def load(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ov.CompiledModel:
    """Compile the model with the requested precision, performance hint and cache folder."""
    if args.model.suffix != ".xml" or not args.model.is_file() or not args.model.with_suffix(".bin").is_file():
        parser.error(f"model not found: {args.model} (needs the .xml and its .bin, from anomalib export)")
    core = ov.Core()
    if str(args.cache_dir).lower() != "none":
        cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--cache-dir {cache}: cannot create it ({exc}); pass another folder or 'none'")
        core.set_property({"CACHE_DIR": str(cache)})
    config = {"INFERENCE_PRECISION_HINT": args.precision, "PERFORMANCE_HINT": args.mode.upper()}
    try:
        return core.compile_model(str(args.model), args.device, config)
    except RuntimeError as exc:
        parser.error(f"cannot load the model {args.model} on {args.device}: {str(exc).splitlines()[0]}")
    raise AssertionError  # parser.error exits


def scored(compiled: ov.CompiledModel, files: list[Path], max_side: int | None, mode: str) -> object:
    """Yield ``(path, preview, outputs)`` in input order, or ``(path, None, error)`` for an unreadable file.

    Latency mode infers each image before reading the next; throughput mode reads images while earlier ones are
    inferred, with OpenVINO's optimal number of requests in flight.
    """
    queue = ov.AsyncInferQueue(compiled, 0) if mode == "throughput" else None
    done: dict[int, dict[str, np.ndarray]] = {}
    if queue is not None:
        queue.set_callback(lambda request, index: done.__setitem__(index, outputs_by_name(request.results)))
    pending: list[tuple[int, Path, Image.Image | None, object]] = []
    for index, path in enumerate([*files, None]):  # None: the end (wait for the requests in flight)
        if path is not None:
            try:
                rgb, preview = read_rgb(path, max_side)
            except UnreadableImageError as exc:
                pending.append((index, path, None, exc))
            else:
                if queue is None:
                    pending.append((index, path, preview, score(compiled, rgb)))
                else:
                    queue.start_async(model_input(rgb), userdata=index)
                    pending.append((index, path, preview, None))
        elif queue is not None:
            queue.wait_all()
        while pending and (pending[0][2] is None or pending[0][3] is not None or pending[0][0] in done):
            index, item, preview, outputs = pending.pop(0)
            yield item, preview, outputs if outputs is not None else done.pop(index)


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
    parser.add_argument(
        "--mode",
        choices=("latency", "throughput"),
        default="latency",
        help="latency: one image at a time; throughput: several in flight (folders, streams)",
    )
    parser.add_argument(
        "--precision",
        choices=("f32", "bf16"),
        default="f32",
        help="floating-point layers (this CPU family defaults to bf16 when not told)",
    )
    parser.add_argument(
        "--cache-dir", default=None, help="compiled-model cache (default: the user's cache folder; 'none': no cache)"
    )
    args = parser.parse_args(argv)  # fmt: skip

    compiled = load(args, parser)
    files = expand(args.images)
    if not files:
        parser.error(f"no images found in {[str(p) for p in args.images]}")

    failed = 0
    used_names: set[str] = set()
    start, times, last = time.perf_counter(), [], time.perf_counter()
    for path, preview, outputs in scored(compiled, files, args.max_side or None, args.mode):
        times.append((time.perf_counter() - last) * 1000)
        if preview is None:
            failed += 1
            print(json.dumps({"image": str(path), "error": str(outputs)}), flush=True)
            last = time.perf_counter()
            continue
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
        last = time.perf_counter()
    seconds = time.perf_counter() - start
    summary = {
        "images": len(files) - failed,
        "failed": failed,
        "seconds": round(seconds, 3),
        "mode": args.mode,
        "images_per_s": round((len(files) - failed) / seconds, 2) if seconds > 0 else None,
    }
    if args.mode == "latency" and times:
        summary["median_ms_per_image"] = round(statistics.median(times), 1)  # read + infer + write, per image
    print(json.dumps({"summary": summary}), file=sys.stderr, flush=True)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
