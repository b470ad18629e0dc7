"""1-shot DFD (offline lite profile) on a folder of good images, with the Python API.

    python examples/api/dfd_folder.py [--good GOOD_IMAGES_DIR] [--output OUTPUT_DIR]

Train -> test -> export to OpenVINO -> run ``OpenVINOInferencer`` on one image and save the heat-map. Without
``--good`` a generated demo part is used. Thresholds come from synthetic anomalies (``val_split_mode=synthetic``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anomalib.data import Folder
from anomalib.deploy import ExportType, OpenVINOInferencer
from anomalib.engine import Engine

from anomalib_fewshot.config import model_init_args
from anomalib_fewshot.data.demo import make_demo_dataset
from anomalib_fewshot.demo import f32_openvino_config, save_heatmap
from anomalib_fewshot.models import Dfd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--good", type=Path, default=None, help="folder of good images (default: generated part)")
    parser.add_argument("--output", type=Path, default=Path("dfd_folder_api_run"))
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the profile (quick runs)")
    parser.add_argument("--samples-per-shot", type=int, default=None, help="override the profile (quick runs)")
    args = parser.parse_args()
    overrides = {"k_shot": args.k_shot}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.samples_per_shot is not None:
        overrides["samples_per_shot"] = args.samples_per_shot

    good = args.good or make_demo_dataset(args.output / "data") / "train" / "good"
    datamodule = Folder(
        name="part",
        root=good,
        normal_dir=".",
        test_split_mode="synthetic",
        val_split_mode="synthetic",
        num_workers=0,
    )
    model = Dfd(**model_init_args("dfd_lite", **overrides))
    engine = Engine(default_root_dir=args.output / "results")
    engine.fit(model, datamodule=datamodule)
    print(engine.test(model, datamodule=datamodule))

    xml = engine.export(
        model, ExportType.OPENVINO, export_root=args.output / "export", onnx_kwargs={"opset_version": 18}
    )
    inferencer = OpenVINOInferencer(xml, device="CPU", config=f32_openvino_config())
    image = sorted(p for p in good.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"})[0]
    prediction = inferencer.predict(image)
    heatmap = save_heatmap(image, prediction.anomaly_map, args.output / "heatmap.png")
    print(f"{image}: score {float(prediction.pred_score.reshape(-1)[0]):.3f}, heat-map {heatmap}")


if __name__ == "__main__":
    main()
