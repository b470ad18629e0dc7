"""Bad-input matrix through the datamodules, every plugin model and the inferencers.

Each case gets a correct result or a clear error naming the file or argument; nothing half-written is left
behind. Parametrised over ``anomalib_fewshot.models.__all__`` (a new model is covered automatically). Failures
that belong to anomalib are ``xfail`` with the case number of ``docs/reliability.md``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch
from anomalib.data import Folder, MVTecAD
from anomalib.deploy import OpenVINOInferencer
from PIL import Image
from torch.utils.data import DataLoader

import anomalib_fewshot.models as plugin_models
from anomalib_fewshot.components.io.images import ImageReadError, read_image
from anomalib_fewshot.components.io.inputs import InputImageError
from anomalib_fewshot.components.lifecycle.fewshot import SHOT_FILE_NAME, FewShotError
from anomalib_fewshot.components.lifecycle.lightning import CheckpointMismatchError
from anomalib_fewshot.components.nn.backbones import WeightsError
from anomalib_fewshot.deploy import FewShotInferencer
from anomalib_fewshot.errors import InvalidArgumentError
from tests.helpers import RAW_PARITY_RTOL, TINY_CONFIGS, fit_tiny, make_tiny_dataset, raw_outputs
from tests.reliability.conftest import F32, MODEL_NAMES, FittedModel, plate

pytestmark = pytest.mark.slow


def test_every_model_is_in_the_matrix():
    assert set(MODEL_NAMES) == set(plugin_models.__all__)
    assert set(MODEL_NAMES) <= set(TINY_CONFIGS)


def _run_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# ----------------------------------------------------------------------------------------------- k-shot
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_k_shot_zero_is_rejected_at_construction(name: str):
    with pytest.raises(FewShotError, match="k_shot"):
        getattr(plugin_models, name)(**{**TINY_CONFIGS[name], "k_shot": 0})


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_k_shot_larger_than_pool_fails_before_writing(name: str, tiny_data_root: Path, tmp_path: Path):
    with pytest.raises(FewShotError, match=r"k_shot=9 is larger than .* \(4\).*lower k_shot"):
        fit_tiny(name, tiny_data_root, tmp_path, k_shot=9)
    assert not [p for p in _run_files(tmp_path) if p.suffix in (".ckpt", ".json")]


@pytest.fixture(scope="module")
def corrupt_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset with two of its four normal training images broken."""
    root = tmp_path_factory.mktemp("corrupt")
    make_tiny_dataset(root)
    train = root / "tiny" / "train" / "good"
    (train / "001.png").write_bytes(b"")
    (train / "003.png").write_text("not an image")
    return root


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_unreadable_shots_are_all_reported_before_training(name: str, corrupt_data_root: Path, tmp_path: Path):
    with pytest.raises(FewShotError) as info:
        fit_tiny(name, corrupt_data_root, tmp_path, k_shot=None)
    message = str(info.value)
    assert "2 of the 4 selected shot image(s) cannot be read" in message
    assert "001.png" in message
    assert "003.png" in message
    assert not [p for p in _run_files(tmp_path) if p.suffix == ".ckpt" or p.name == SHOT_FILE_NAME]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_empty_few_shot_source_folder(name: str, tmp_path: Path, tiny_data_root: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FewShotError, match="holds no images"):
        fit_tiny(name, tiny_data_root, tmp_path / "run", few_shot_source=str(tmp_path / "empty"))


def test_empty_normal_folder_in_a_folder_datamodule(tmp_path: Path, tiny_data_root: Path):
    (tmp_path / "good").mkdir()
    datamodule = Folder(name="part", root=tmp_path, normal_dir="good", num_workers=0)
    with pytest.raises(RuntimeError, match=r"Found 0 .*NORMAL images in .*good"):  # anomalib's own clear error
        datamodule.setup()


# ------------------------------------------------------------------- mixed image modes in the training set
@pytest.fixture(scope="module")
def mixed_data_root(tmp_path_factory: pytest.TempPathFactory, bad_files: dict[str, Path]) -> Path:
    """Tiny dataset whose normal training images are grayscale, RGBA, 16-bit and 5000x4000 RGB."""
    root = tmp_path_factory.mktemp("mixed")
    make_tiny_dataset(root)
    train = root / "tiny" / "train" / "good"
    for path in train.iterdir():
        path.unlink()
    for case in ("grayscale", "rgba", "16bit", "large"):
        shutil.copy(bad_files[case], train / f"{case}.png")
    return root


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_grayscale_rgba_16bit_and_large_shots_train(name: str, mixed_data_root: Path, tmp_path: Path):
    model, engine = fit_tiny(name, mixed_data_root, tmp_path, k_shot=None)
    assert len(model.few_shot_record["shots"]) == 4
    datamodule = MVTecAD(root=mixed_data_root, category="tiny", num_workers=0, eval_batch_size=4)
    predictions = engine.predict(model, datamodule=datamodule)
    scores = torch.cat([p.pred_score.reshape(-1) for p in predictions])
    assert torch.isfinite(scores).all()


def test_shot_images_keep_the_16bit_range(mixed_data_root: Path, tmp_path: Path):
    model, _ = fit_tiny("Ed", mixed_data_root, tmp_path, k_shot=None)
    paths = model.few_shot_record["shots"]
    means = {Path(p).stem: float(s.mean()) for p, s in zip(paths, model.read_shot_images(paths), strict=True)}
    assert abs(means["16bit"] - means["grayscale"]) < 1e-2, means  # anomalib's reader would give ~1.0


def test_mask_of_another_size_is_resized(tmp_path: Path, tiny_data_root: Path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    mask = sorted((root / "tiny" / "ground_truth").rglob("*.png"))[0]
    Image.open(mask).resize((32, 40)).save(mask)
    model, engine = fit_tiny("Ed", root, tmp_path / "run")
    metrics = engine.test(model, datamodule=MVTecAD(root=root, category="tiny", num_workers=0, eval_batch_size=4))
    assert all(np.isfinite(v) for v in metrics[0].values())


# --------------------------------------------------------------------------------------- weights files
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_missing_weights_file_is_named(name: str, tiny_data_root: Path, tmp_path: Path):
    missing = tmp_path / "no_such_weights.pth"
    with pytest.raises(WeightsError, match=r"no_such_weights\.pth"):
        fit_tiny(name, tiny_data_root, tmp_path / "run", weights_path=str(missing))
    assert not [p for p in _run_files(tmp_path / "run") if p.suffix == ".ckpt"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_weights_for_another_architecture_are_rejected(name: str, tiny_data_root: Path, tmp_path: Path):
    wrong = tmp_path / "resnet_like.pth"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, wrong)
    with pytest.raises(WeightsError, match=r"resnet_like\.pth"):
        fit_tiny(name, tiny_data_root, tmp_path / "run", weights_path=str(wrong))


def test_checkpoint_of_another_model_is_a_clear_error(fitted: FittedModel):
    for other in MODEL_NAMES:
        if other != fitted.name:
            with pytest.raises(CheckpointMismatchError, match=f"holds a {fitted.name} model"):
                getattr(plugin_models, other).load_from_checkpoint(fitted.ckpt, weights_only=True)


def test_missing_checkpoint_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        plugin_models.Dfd.load_from_checkpoint(tmp_path / "gone.ckpt", weights_only=True)


# ------------------------------------------------------------------------------------ NaN / inf tensors
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_input_is_rejected_eagerly(fitted: FittedModel, value: float):
    images = torch.rand(3, 3, 64, 64)
    images[2, 1, 5, 5] = value
    with pytest.raises(InputImageError, match=r"batch index \[2\] contain NaN or inf"):
        fitted.model(images)


def test_out_of_range_and_wrong_shape_inputs(fitted: FittedModel):
    with pytest.raises(InputImageError, match="divide 8-bit images by 255"):
        fitted.model(torch.rand(1, 3, 64, 64) * 255)
    with pytest.raises(InputImageError, match="expected shape"):
        fitted.model(torch.rand(1, 1, 64, 64))


def test_non_finite_batch_in_engine_predict_names_the_file(fitted: FittedModel, tiny_data_root: Path):
    from anomalib.data import ImageBatch

    image = torch.rand(2, 3, 64, 64)
    image[1, 0, 0, 0] = float("nan")
    batch = ImageBatch(image=image, image_path=["cam/ok.png", "cam/bad.png"])
    loader = DataLoader([batch], batch_size=None)
    del tiny_data_root
    with pytest.raises(InputImageError, match=r"bad\.png"):
        fitted.engine.predict(fitted.model, dataloaders=loader)


# ------------------------------------------------------------------------------------------ inferencers
@pytest.fixture
def inferencer(fitted: FittedModel) -> FewShotInferencer:
    return FewShotInferencer(fitted.export("openvino"), input_size=64)


@pytest.mark.parametrize("case", ["rgb", "grayscale", "rgba", "16bit", "large", "tiny"])
def test_inferencer_scores_every_readable_case(inferencer: FewShotInferencer, bad_files: dict[str, Path], case: str):
    result = inferencer.predict(bad_files[case])
    assert np.isfinite(np.asarray(result.pred_score)).all()
    assert np.isfinite(np.asarray(result.anomaly_map)).all()


def test_inferencer_16bit_matches_8bit(inferencer: FewShotInferencer, bad_files: dict[str, Path]):
    a = inferencer.predict(bad_files["16bit"])
    b = inferencer.predict(bad_files["grey8"])
    np.testing.assert_allclose(np.asarray(a.anomaly_map), np.asarray(b.anomaly_map), atol=1e-2)


def test_inferencer_large_matches_eager(fitted: FittedModel, inferencer: FewShotInferencer, bad_files: dict[str, Path]):
    from anomalib_fewshot.components.io.images import read_image

    # what Engine batches see: the pre-processor's antialiased resize (the exported graph resizes without it)
    image = torch.nn.functional.interpolate(
        read_image(bad_files["large"])[None], size=(64, 64), antialias=True, mode="bilinear"
    )
    with torch.no_grad():
        expected = fitted.model(image.clamp(0, 1))
    result = inferencer.predict(bad_files["large"])
    np.testing.assert_allclose(np.asarray(result.pred_score).reshape(-1), expected.pred_score.reshape(-1), atol=1e-2)


@pytest.mark.parametrize("case", ["zero_byte", "truncated", "not_an_image"])
def test_inferencer_names_broken_files(inferencer: FewShotInferencer, bad_files: dict[str, Path], case: str):
    with pytest.raises(ImageReadError, match=bad_files[case].name):
        inferencer.predict(bad_files[case])


def test_inferencer_arrays(inferencer: FewShotInferencer):
    rgb = plate()
    grey = rgb.mean(-1).astype(np.uint8)
    for array in (rgb, grey, np.dstack([rgb, rgb[..., :1]]), rgb.astype(np.uint16) * 257):
        assert np.isfinite(np.asarray(inferencer.predict(array).pred_score)).all()
    nan = rgb.astype(np.float32) / 255
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputImageError, match="NaN"):
        inferencer.predict(nan)


@pytest.mark.parametrize("fitted", ["Dfd"], indirect=True)  # the stream is model-agnostic: one export suffices
def test_inferencer_stream_matches_predict_in_order_and_caches_outside_the_working_directory(
    fitted: FittedModel, bad_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Throughput mode: several requests in flight, results in input order, broken files named, no ./openvino_cache."""
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("ANOMALIB_FEWSHOT_CACHE", raising=False)
    model = fitted.export("openvino")
    latency = FewShotInferencer(model, input_size=64)
    stream = FewShotInferencer(model, input_size=64, mode="throughput")
    cases = ["rgb", "truncated", "grayscale", "16bit", "zero_byte", "large", "rgba", "tiny"] * 2
    results = list(stream.predict_stream([bad_files[c] for c in cases], requests=3))
    assert [item for item, _ in results] == [bad_files[c] for c in cases]
    for case, (_, result) in zip(cases, results, strict=True):
        if case in ("truncated", "zero_byte"):
            assert isinstance(result, ImageReadError) and bad_files[case].name in str(result)
            continue
        want = latency.predict(bad_files[case])
        np.testing.assert_allclose(result.anomaly_map, want.anomaly_map, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result.pred_score, want.pred_score, rtol=1e-5, atol=1e-6)
    assert not (work / "openvino_cache").exists() and list(work.iterdir()) == []
    assert list((cache / "anomalib_fewshot" / "openvino").iterdir()), "the compiled model is cached in the user cache"
    assert str(stream.model.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    assert str(latency.model.get_property("PERFORMANCE_HINT")) == "LATENCY"
    bf16 = FewShotInferencer(model, precision="bf16", cache_dir=False)
    # OpenVINO runs bf16 only on CPUs that have it (AVX-512 bf16, AMX) and falls back to f32 elsewhere (e.g. Zen 3)
    capable = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert ("bfloat16" if capable else "float32") in str(bf16.model.get_property("INFERENCE_PRECISION_HINT"))
    with pytest.raises(InvalidArgumentError, match="precision 'int8'"):
        FewShotInferencer(model, precision="int8")
    with pytest.raises(InvalidArgumentError, match="mode 'batch'"):
        FewShotInferencer(model, mode="batch")


def test_inferencer_missing_model(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"model\.xml"):
        FewShotInferencer(tmp_path / "model.xml")


# anomalib's own inferencer on the same inputs: the failures reported upstream (docs/reliability.md)
# (A1, 16-bit PNGs read clipped, is anomalib's reader: tests/reliability/test_inputs.py checks it without a model.)
# These are anomalib's behaviours, the same for every model: checked on one model's export.
@pytest.mark.parametrize("fitted", ["Dfd"], indirect=True)
@pytest.mark.xfail(reason="anomalib A2: grayscale/RGBA arrays and PIL images reach OpenVINO unconverted", strict=True)
def test_anomalib_inferencer_grayscale_array(fitted: FittedModel):
    inferencer = OpenVINOInferencer(fitted.export("openvino"), device="CPU", config=F32)
    inferencer.predict(plate().mean(-1).astype(np.uint8))


@pytest.mark.parametrize("fitted", ["Dfd"], indirect=True)
@pytest.mark.xfail(reason="anomalib A3: OpenVINOInferencer scores NaN pixels silently", strict=True)
def test_anomalib_inferencer_rejects_nan(fitted: FittedModel):
    inferencer = OpenVINOInferencer(fitted.export("openvino"), device="CPU", config=F32)
    with pytest.raises(ValueError, match="NaN"):
        inferencer.predict(np.full((3, 64, 64), np.nan, np.float32))


@pytest.mark.xfail(reason="anomalib A4: a missing model file is an OpenVINO RuntimeError", strict=True)
def test_anomalib_inferencer_missing_model(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        OpenVINOInferencer(tmp_path / "model.xml", device="CPU")


@pytest.mark.xfail(reason="anomalib A5: a truncated file's error does not name the file", strict=True)
def test_anomalib_reader_names_truncated_file(bad_files: dict[str, Path]):
    from anomalib.data.utils import read_image as anomalib_read_image

    with pytest.raises(OSError, match=r"truncated\.png"):
        anomalib_read_image(bad_files["truncated"])


@pytest.mark.parametrize("fitted", ["Dfd"], indirect=True)  # the script is model-agnostic: one export suffices
def test_edge_script_scores_readable_files_and_names_broken_ones(
    fitted: FittedModel, bad_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """examples/edge/run_openvino.py (openvino + numpy + pillow only) on the matrix's files and a folder."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("run_openvino", Path("examples/edge/run_openvino.py"))
    edge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(edge)
    model = fitted.export("openvino")
    cases = ["rgb", "grayscale", "rgba", "16bit", "grey8", "large", "tiny", "zero_byte", "truncated", "not_an_image"]
    capsys.readouterr()  # drop what the fit and the export printed
    status = edge.main([str(model), *(str(bad_files[c]) for c in cases), "--heatmap", str(tmp_path / "maps")])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {Path(line["image"]).name: line for line in lines}
    assert status == 1  # some files could not be read; the others were still scored
    for case in cases[:7]:
        line = by_name[bad_files[case].name]
        assert np.isfinite(line["pred_score"]), line
        assert Path(line["heatmap"]).is_file()
    for case in cases[7:]:
        assert bad_files[case].name in by_name[bad_files[case].name]["error"]
    # 16-bit keeps its range: it scores like the same grey values in 8 bits (PIL's convert("RGB") gives white)
    assert abs(by_name["grey16.png"]["pred_score"] - by_name["grey8.png"]["pred_score"]) < 1e-2
    assert not list((tmp_path / "maps").glob("*.partial"))
    # a folder of good images: every image scored, exit status 0
    folder = tmp_path / "incoming"
    folder.mkdir()
    for case in ("rgb", "grayscale"):
        (folder / bad_files[case].name).write_bytes(bad_files[case].read_bytes())
    other = tmp_path / "other"
    other.mkdir()
    (other / bad_files["rgb"].name).write_bytes(bad_files["rgb"].read_bytes())  # same name, another folder
    assert edge.main([str(model), str(folder), str(other), "--heatmap", str(tmp_path / "maps2")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert len(list((tmp_path / "maps2").glob("*.png"))) == 3  # no heat-map overwritten
    with pytest.raises(SystemExit):
        edge.main([str(tmp_path / "missing.xml"), str(folder)])
    # the raw graph (no normalisation, no clamp): the script scores a file as the eager model scores the same image
    raw_cases = ["rgb", "grayscale", "16bit"]
    raw_model = str(fitted.export("openvino_raw"))
    capsys.readouterr()  # drop what the export printed
    assert edge.main([raw_model, *(str(bad_files[c]) for c in raw_cases), "--precision", "f32"]) == 0
    scores = [json.loads(line)["pred_score"] for line in capsys.readouterr().out.splitlines()]
    images = torch.stack([read_image(bad_files[c]) for c in raw_cases])
    expected = raw_outputs(fitted.model, images)
    assert float(expected.pred_score.std()) > 0  # the three cases score differently (rgb vs grey)
    tolerance = RAW_PARITY_RTOL * float(expected.anomaly_map.max() - expected.anomaly_map.min()) + 1e-4  # JSON: 4 d.p.
    np.testing.assert_allclose(scores, expected.pred_score.reshape(-1).numpy(), rtol=0, atol=tolerance)


@pytest.mark.parametrize("fitted", ["Dfd"], indirect=True)
def test_edge_script_throughput_mode_scores_like_latency_mode_in_input_order(
    fitted: FittedModel,
    bad_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
):
    """``--mode throughput``: scores as ``--mode latency``, in input order, images/s on stderr, no cwd cache."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("run_openvino", Path("examples/edge/run_openvino.py").resolve())
    edge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(edge)
    model = fitted.export("openvino")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    cases = ["rgb", "truncated", "grayscale", "16bit", "large", "rgba", "tiny"] * 2
    files = [str(bad_files[c]) for c in cases]
    capsys.readouterr()
    runs = {}
    for mode in ("latency", "throughput"):
        status = edge.main([str(model), *files, "--mode", mode, "--cache-dir", str(tmp_path / "cache")])
        out, err = capsys.readouterr()
        assert status == 1  # the truncated file
        runs[mode] = [json.loads(line) for line in out.splitlines()]
        summary = json.loads(err.strip().splitlines()[-1])["summary"]
        assert summary["images"] == 12 and summary["failed"] == 2 and summary["images_per_s"] > 0, summary
        assert summary["mode"] == mode
    assert [line["image"] for line in runs["throughput"]] == files  # input order
    for fast, slow in zip(runs["throughput"], runs["latency"], strict=True):
        assert fast.get("pred_score") == slow.get("pred_score") and ("error" in fast) == ("error" in slow), fast
    assert list(work.iterdir()) == []  # nothing written to the working directory
    assert list((tmp_path / "cache").iterdir())
