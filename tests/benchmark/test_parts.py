"""``fit-parts``: one model per part into a catalogue; a bad part is a row with its error; reruns skip or refit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from anomalib_fewshot.benchmark import parts, runner
from anomalib_fewshot.benchmark.store import read_rows
from anomalib_fewshot.errors import InvalidArgumentError, MissingFileError
from tests.helpers import TINY_CONFIGS


def _good_images(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` good images of a generated part (a plate with a soft gradient and noise), 64 px."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = np.linspace(80, 170, 64)[None, :, None] * np.ones((64, 1, 3))
    for i in range(count):
        image = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"good_{i:03d}.png")
    return folder


def _parts_file(tmp_path: Path, entries: list[dict[str, Any]], **extra: Any) -> Path:
    tiny = {k: v for k, v in TINY_CONFIGS["Pcsnet"].items() if k != "k_shot"}
    config = {"defaults": {"model": "Pcsnet", "overrides": tiny, "k_shot": 1}, "parts": entries, **extra}
    path = tmp_path / "parts.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("parts_list", "message"),
    [
        ([{"name": "a b", "images": "x"}], r"part 1: its name 'a b' is missing or not a plain name"),
        ([{"name": "a", "images": "x"}, {"name": "a", "images": "y"}], r"part 2: its name 'a' is repeated"),
        ([{"name": "a", "images": "x", "modle": "Dfd"}], r"part a in .*: a part takes name, images and"),
        ([{"name": "a"}], r"part a in .*: a part takes name, images and"),
        ([], r"not a parts file"),
    ],
)
def test_a_bad_parts_file_is_named(tmp_path: Path, parts_list, message):
    with pytest.raises(InvalidArgumentError, match=message):
        parts.load_parts(_parts_file(tmp_path, parts_list))
    with pytest.raises(MissingFileError, match=r"parts file '.*nowhere.yaml' not found"):
        parts.load_parts(tmp_path / "nowhere.yaml")


def test_images_are_checked_before_anything_runs(tmp_path: Path):
    part = {"name": "p", "images": str(tmp_path / "missing"), "k_shot": 1}
    with pytest.raises(MissingFileError, match=r"image folder '.*missing' not found"):
        parts.check_images(part)
    folder = _good_images(tmp_path / "few", 20)
    with pytest.raises(InvalidArgumentError, match=r"holds 20 images: k_shot = 1 needs at least k_shot \+ 20 = 21"):
        parts.check_images({**part, "images": str(folder)})
    folder = _good_images(tmp_path / "bad", 21)
    (folder / "good_007.png").write_bytes(b"not a png at all")
    with pytest.raises(InvalidArgumentError, match=r"image '.*good_007.png' cannot be read"):
        parts.check_images({**part, "images": str(folder)})


def test_the_image_digest_changes_with_any_image(tmp_path: Path):
    folder = _good_images(tmp_path / "p", 3)
    images = sorted(str(p) for p in folder.iterdir())
    digest = parts.images_sha256(images)
    assert parts.images_sha256(list(reversed(images))) == digest
    Image.open(images[1]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(images[1])
    assert parts.images_sha256(images) != digest


def _defective_images(folder: Path, count: int) -> Path:
    """``count`` defective images of the generated part: a dark square on the plate."""
    _good_images(folder, count, seed=9)
    for image in folder.iterdir():
        array = np.asarray(Image.open(image)).copy()
        array[20:36, 24:40] = 10
        Image.fromarray(array).save(image)
    return folder


def test_labelled_images_of_a_part_are_a_folder_with_its_own_good_test_images(tmp_path: Path):
    _good_images(tmp_path / "images" / "p", 3)
    _good_images(tmp_path / "labelled" / "good", 2, seed=5)
    _defective_images(tmp_path / "labelled" / "defect", 2)
    entries = [{"name": "p", "images": "images/p",
                "test": {"abnormal_dir": "labelled/defect", "normal_test_dir": "labelled/good"}}]  # fmt: skip
    _, (part,) = parts.load_parts(_parts_file(tmp_path, entries))
    labelled = parts.labelled_data(part)
    assert labelled["folder"]["abnormal_dir"] == str((tmp_path / "labelled" / "defect").resolve())
    assert labelled["folder"]["normal_dir"] == part["images"] and labelled["folder"]["mask_dir"] is None
    assert parts.labelled_data({**part, "test": None}) is None
    with pytest.raises(InvalidArgumentError, match=r"part p: test: .* normal_test_dir"):
        parts.labelled_data({**part, "test": {"abnormal_dir": "labelled/defect"}})
    with pytest.raises(MissingFileError, match=r"part p: test: dataset p: abnormal_dir '.*labelled/nothing'"):
        parts.labelled_data({**part, "test": {"abnormal_dir": "labelled/nothing", "normal_test_dir": "labelled/good"}})
    assert parts.settings_key(part) != parts.settings_key({**part, "test": None})  # new test data: scored again


@pytest.mark.slow
def test_fit_parts_catalogues_good_parts_names_the_broken_one_and_reruns_only_what_changed(tmp_path: Path, monkeypatch):
    """Three generated parts, one broken: two deployable models and one row naming the unreadable image."""
    from anomalib_fewshot.deploy import FewShotInferencer

    _good_images(tmp_path / "images" / "bracket", 22, seed=1)
    _good_images(tmp_path / "images" / "gasket", 23, seed=2)
    broken = _good_images(tmp_path / "images" / "lid", 22, seed=3)
    (broken / "good_004.png").write_bytes(b"\x89PNG truncated")
    _good_images(tmp_path / "labelled" / "good", 4, seed=5)
    _defective_images(tmp_path / "labelled" / "defect", 3)
    labelled = {"abnormal_dir": "labelled/defect", "normal_test_dir": "labelled/good"}  # no masks
    entries = [
        {"name": "bracket", "images": "images/bracket", "test": labelled},
        {"name": "gasket", "images": "images/gasket", "k_shot": 2, "int8": True},
        {"name": "lid", "images": "images/lid"},
    ]
    path = _parts_file(tmp_path, entries, output="out")
    assert parts.main([str(path)]) == 0
    rows = {row["part"]: row for row in read_rows(tmp_path / "out" / "parts.csv")}
    assert list(rows) == ["bracket", "gasket", "lid"]
    assert rows["lid"]["status"] == "failed" and "good_004.png' cannot be read" in rows["lid"]["error"]
    for name, k in (("bracket", 1), ("gasket", 2)):
        row = rows[name]
        assert row["status"] == "ok", row
        assert row["model"] == "Pcsnet" and row["profile"] == "pcsnet_lite" and row["k_shot"] == str(k)
        assert len(yaml.safe_load(row["shots"])) == k
        for field in ("image_auroc", "pixel_auroc", "aupro", "image_fpr", "image_tpr", "fit_s", "openvino_ms"):
            assert 0 <= float(row[field]), (name, field)
        assert float(row["image_threshold"]) == float(row["image_threshold"])  # a number, not NaN
        inferencer = FewShotInferencer(row["export"])
        result = inferencer.predict(np.asarray(Image.open(tmp_path / "images" / name / "good_000.png")))
        assert result.pred_label is not None and result.anomaly_map.shape[-2:] == (64, 64)
    bracket = rows["bracket"]  # also scored on its labelled images: image-level metrics (no masks), the decision
    assert bracket["test_n"] == "7" and 0 <= float(bracket["test_image_auroc"]) <= 1
    assert bracket["test_pixel_auroc"] == bracket["test_aupro"] == "" and 0 <= float(bracket["test_image_tpr"]) <= 1
    assert rows["gasket"]["test_n"] == rows["gasket"]["test_image_auroc"] == ""
    assert rows["bracket"]["export_int8"] == ""
    assert Path(rows["gasket"]["export_int8"]).is_file()  # asked for: anomalib's INT8_PTQ on the shots
    FewShotInferencer(rows["gasket"]["export_int8"])

    # Rerun: finished parts are skipped; the broken part is tried again, and a part whose images changed is refitted
    calls = []

    def fake_run_job(job: dict[str, Any], jobs_dir: Path, timeout_s: float) -> dict[str, Any]:
        calls.append(job["dataset"])
        return {**{f: job[f] for f in ("model", "variant", "dataset", "k_shot", "seed", "split")}, "status": "ok"}

    monkeypatch.setattr(runner, "run_job", fake_run_job)
    assert parts.main([str(path)]) == 0
    assert calls == []  # lid still broken: a failed row again, no job
    image = tmp_path / "images" / "gasket" / "good_010.png"
    Image.open(image).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(image)
    (broken / "good_004.png").unlink()
    assert parts.main([str(path)]) == 0
    assert sorted(calls) == ["gasket", "lid"]
    rows = {row["part"]: row for row in read_rows(tmp_path / "out" / "parts.csv")}
    assert all(row["status"] == "ok" for row in rows.values())
