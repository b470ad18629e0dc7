"""Long-run check: stream many images through ``OpenVINOInferencer`` and ``Engine.predict``, watch memory.

For each model: fit its offline lite profile on the generated demo data (a short schedule: the inference graph is
the profile's, only training is shortened), export OpenVINO, then stream ``--images`` files through

* ``openvino``: anomalib's :class:`~anomalib.deploy.OpenVINOInferencer` (f32), one file at a time;
* ``engine``: ``Engine.predict`` over a folder (``return_predictions=False``, no visualiser),

sampling the process's resident memory (RSS) at the start, the middle and the end of each stream, and the
throughput. Not a CI test (``tests/benchmark/test_long_run.py`` runs it on a few images)::

    python -m research.long_run --images 2000 --output docs/measurements/long_run.json
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from anomalib_fewshot.benchmark.machine import cpu_name
from anomalib_fewshot.components.io.atomic import atomic_write_json
from anomalib_fewshot.models import REGISTRY

#: Short-schedule overrides of each lite profile (architecture and inference graph unchanged), from the registry.
SHORT_TRAINING: dict[str, dict[str, Any]] = {name: dict(spec.short_schedule) for name, spec in REGISTRY.items()}
#: Each model's lite profile, from the registry.
PROFILES: dict[str, str] = {name: spec.lite_profile for name, spec in REGISTRY.items()}


def rss_mib() -> float:
    """Resident memory of this process in MiB."""
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def make_stream_folder(root: Path, n_images: int, n_unique: int = 100, size: int = 256) -> Path:
    """A folder of ``n_images`` image files: ``n_unique`` generated plates, repeated as symbolic links."""
    import numpy as np

    from anomalib_fewshot.data.demo import _plate

    unique, stream = root / "unique", root / f"stream_{n_images}"
    unique.mkdir(parents=True, exist_ok=True)
    stream.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    sources = []
    for i in range(min(n_unique, n_images)):
        path = unique / f"{i:04d}.png"
        if not path.exists():
            _plate(rng, size).save(path)
        sources.append(path)
    for i in range(n_images):
        link = stream / f"{i:05d}.png"
        if not link.exists():
            link.symlink_to(sources[i % len(sources)].resolve())
    return stream


class _Sampler:
    """Records RSS and time at the start, middle and end of a stream of ``total`` images.

    Also keeps a trace: RSS (MiB) and elapsed seconds at every tenth of the stream, so a slow leak shows as a slope
    rather than hiding between three samples.
    """

    def __init__(self, total: int, trace_points: int = 10) -> None:
        self.total = total
        self.samples: dict[str, float] = {}
        self.start = time.perf_counter()
        self.samples["rss_start_mib"] = rss_mib()
        self.marks = sorted({max(1, round(total * i / trace_points)) for i in range(1, trace_points + 1)})
        self.trace: list[dict[str, float]] = []

    def seen(self, count: int) -> None:
        if "rss_middle_mib" not in self.samples and count >= self.total // 2:
            self.samples["rss_middle_mib"] = rss_mib()
        if self.marks and count >= self.marks[0]:
            self.marks = [mark for mark in self.marks if mark > count]
            elapsed = round(time.perf_counter() - self.start, 1)
            self.trace.append({"images": count, "seconds": elapsed, "rss_mib": rss_mib()})

    def finish(self, count: int) -> dict[str, float]:
        seconds = time.perf_counter() - self.start
        self.samples["rss_end_mib"] = rss_mib()
        return {
            "images": count,
            "seconds": round(seconds, 1),
            "images_per_second": round(count / seconds, 2) if seconds > 0 else None,
            **self.samples,
            "rss_growth_mib": round(self.samples["rss_end_mib"] - self.samples["rss_start_mib"], 1),
            "trace": self.trace,
        }


def _stream_openvino(xml: Path, files: list[Path]) -> dict[str, Any]:
    from anomalib.deploy import OpenVINOInferencer

    inferencer = OpenVINOInferencer(xml, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    inferencer.predict(files[0])  # warm-up (compilation caches)
    sampler = _Sampler(len(files))
    for count, path in enumerate(files, start=1):
        inferencer.predict(path)
        sampler.seen(count)
    return sampler.finish(len(files))


def _stream_engine(model: Any, folder: Path, n_images: int, work: Path, batch_size: int) -> dict[str, Any]:
    from anomalib.data import PredictDataset
    from anomalib.engine import Engine
    from lightning.pytorch import Callback
    from torch.utils.data import DataLoader

    class _Count(Callback):
        def __init__(self, sampler: _Sampler) -> None:
            self.sampler, self.count = sampler, 0

        def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *args: Any) -> None:
            del trainer, pl_module, outputs, args
            self.count += len(batch.image)
            self.sampler.seen(self.count)

    dataset = PredictDataset(folder)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=0, collate_fn=dataset.collate_fn)
    model.visualizer = None  # the stream measures inference, not 2,000 PNG writes
    gc.collect()
    sampler = _Sampler(n_images)
    counter = _Count(sampler)
    engine = Engine(default_root_dir=work, logger=False, enable_progress_bar=False, callbacks=[counter])
    engine.predict(model, dataloaders=loader, return_predictions=False)
    return sampler.finish(counter.count)


def run_model(name: str, work: Path, n_images: int, batch_size: int = 8) -> dict[str, Any]:
    """Fit, export and stream ``n_images`` through both paths for one model; return its measurements."""
    from anomalib.data import MVTecAD
    from anomalib.deploy import ExportType
    from anomalib.engine import Engine

    import anomalib_fewshot.models as plugin_models
    from anomalib_fewshot.config import model_init_args
    from anomalib_fewshot.data.demo import make_demo_dataset

    data = work / "data"
    if not (data / "plate").exists():
        make_demo_dataset(data, "plate", n_train=4, n_test_good=3, n_test_defect=2)
    folder = make_stream_folder(work / "stream_data", n_images)
    files = sorted(folder.iterdir())[:n_images]
    overrides = {"k_shot": 1, **SHORT_TRAINING[name]}
    model = getattr(plugin_models, name)(**model_init_args(PROFILES[name], **overrides))
    datamodule = MVTecAD(root=data, category="plate", num_workers=0, eval_batch_size=8)
    engine = Engine(default_root_dir=work / name, logger=False, enable_progress_bar=False)
    start = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    xml = engine.export(model, ExportType.OPENVINO, export_root=work / name, onnx_kwargs={"opset_version": 18})
    row: dict[str, Any] = {
        "model": name,
        "profile": PROFILES[name],
        "training_overrides": overrides,
        "fit_seconds": round(fit_seconds, 1),
    }
    row["openvino"] = _stream_openvino(Path(xml), files)
    row["engine_predict"] = _stream_engine(model, folder, n_images, work / name / "predict", batch_size)
    return row


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m research.long_run``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--images", type=int, default=2000, help="images per model and path")
    parser.add_argument("--images-per-model", default="{}", help='JSON overrides, e.g. {"Fdsl": 500}')
    parser.add_argument("--batch-size", type=int, default=8, help="Engine.predict batch size")
    parser.add_argument("--work", type=Path, default=Path("long_run_work"), help="scratch folder")
    parser.add_argument("--output", type=Path, default=Path("docs/measurements/long_run.json"))
    args = parser.parse_args(argv)
    per_model = json.loads(args.images_per_model)
    result: dict[str, Any] = {
        "command": "python -m research.long_run " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_name(),  # CPU model and cores, as the benchmark rows name it
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
        },
        "image_size": 256,
        "rows": [],
    }
    for name in args.models:
        row = run_model(name, args.work, int(per_model.get(name, args.images)), args.batch_size)
        row["loadavg_after"] = os.getloadavg()
        result["rows"].append(row)
        atomic_write_json(args.output, result)  # partial results survive an interrupted run
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
