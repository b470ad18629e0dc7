"""Development split: exact synthetic defects, a pool that never holds a shot, an MVTec layout anomalib reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_fewshot.components.lifecycle.fewshot import select_shots
from anomalib_fewshot.data import defects
from anomalib_fewshot.data.defects import FAMILIES, MIN_PIXELS, SIZES, VISIBLE, DefectError, add_defect
from anomalib_fewshot.data.dev_split import MANIFEST, build_dev_split, development_pool, excluded_shots
from anomalib_fewshot.errors import InvalidArgumentError


def _textured(height: int = 96, width: int = 128, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 8, generator=generator) * 0.6 + 0.2
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    grain = torch.randn(1, height, width, generator=generator) * 0.06  # surface texture: blur has something to remove
    return (smooth + grain).clamp(0, 1)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", list(SIZES))
def test_a_defect_changes_the_image_visibly_on_its_mask_and_nowhere_else(family: str, size: str):
    image = _textured()
    foreign = [_textured(64, 64, seed=5)] if family == "foreign" else []
    defect = add_defect(image, family, size, np.random.default_rng(3), foreign)
    change = (defect.image - image).abs().amax(0)
    assert defect.mask.dtype == torch.bool
    assert defect.mask.shape == image.shape[1:]
    assert int(defect.mask.sum()) >= MIN_PIXELS
    assert float(change[defect.mask].mean()) >= VISIBLE  # visible on average over the mask
    assert float(change[~defect.mask].max()) == 0.0  # nothing else changed at all
    if family != "blur":  # drawn defects change (almost) every pixel of their region
        assert float((change[defect.mask] > 0).float().mean()) > 0.9
    assert defect.image.min() >= 0
    assert defect.image.max() <= 1


def test_sizes_grow_and_scratches_are_thin():
    image = _textured(256, 256)
    areas = {
        size: np.mean([int(add_defect(image, "blob", size, np.random.default_rng(s)).mask.sum()) for s in range(8)])
        for size in SIZES
    }
    assert areas["small"] < areas["medium"] < areas["large"]
    scratch = add_defect(image, "scratch", "large", np.random.default_rng(0)).mask
    assert int(scratch.sum()) < 0.03 * scratch.numel()


@pytest.mark.parametrize("family", ["shift", "foreign"])
def test_a_grey_image_gets_grey_defects(family: str):
    grey = _textured()[:1].expand(3, -1, -1)
    for seed in range(6):
        defect = add_defect(grey, family, "large", np.random.default_rng(seed), [_textured(64, 64, seed=9)])
        assert torch.equal(defect.image[0], defect.image[1])
        assert torch.equal(defect.image[1], defect.image[2])


def test_the_same_seed_draws_the_same_defect():
    image = _textured()
    a = add_defect(image, "shift", "medium", np.random.default_rng(7))
    b = add_defect(image, "shift", "medium", np.random.default_rng(7))
    c = add_defect(image, "shift", "medium", np.random.default_rng(8))
    assert torch.equal(a.image, b.image)
    assert not torch.equal(a.mask, c.mask)


def test_an_invisible_defect_is_an_error_not_an_empty_mask():
    flat = torch.full((3, 64, 64), 0.5)
    with pytest.raises(DefectError, match="blur"):
        add_defect(flat, "blur", "medium", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown defect family"):
        add_defect(flat, "perlin", "medium", np.random.default_rng(0))


def test_foreign_texture_without_foreign_images_is_procedural():
    texture = defects.procedural_texture(32, 48, np.random.default_rng(0))
    assert texture.shape == (3, 32, 48)
    assert texture.std() > 0.05


def test_the_pool_never_holds_a_shot_of_seeds_0_to_2_and_k_up_to_8():
    paths = [f"/data/train/good/{i:03d}.png" for i in range(60)]
    clean, defective = development_pool(list(reversed(paths)), cap=20, seed=0)
    assert len(clean) == len(defective) == 10
    assert not set(clean) & set(defective)
    shots = {s for seed in (0, 1, 2) for k in range(1, 9) for s in select_shots(paths, k, seed)}
    assert shots == excluded_shots(paths)
    assert not (set(clean) | set(defective)) & shots
    assert len(shots) > 8  # the seeds pick different images
    with pytest.raises(InvalidArgumentError, match="never shots"):
        development_pool(paths[:3])


def _dataset(root: Path, n: int = 60, size: int = 48) -> list[str]:
    folder = root / "cat" / "train" / "good"
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        array = (_textured(size, size, seed=i).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"{i:03d}.png")
        paths.append(str(folder / f"{i:03d}.png"))
    return paths


def test_build_writes_an_mvtec_layout_that_anomalib_reads_with_the_same_shots(tmp_path: Path):
    from anomalib.data import MVTecAD

    train = _dataset(tmp_path / "source")
    out = tmp_path / "cache"
    folder = build_dev_split(train, out, "cat", cap=20, seed=0)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["generator_version"] == defects.GENERATOR_VERSION
    assert manifest["counts"]["good"] == 10
    assert sum(v for k, v in manifest["counts"].items() if k != "good") == 10
    assert set(manifest["counts"]) == {"good", *FAMILIES}
    assert (out / "gallery_cat.png").is_file()
    datamodule = MVTecAD(root=out, category="cat", num_workers=0)
    datamodule.setup()
    assert len(datamodule.train_data) == len(train)
    test = datamodule.test_data.samples
    assert len(test) == 20
    assert (test["label_index"] == 1).sum() == 10
    for row in test[test["label_index"] == 1].itertuples():
        mask = np.asarray(Image.open(row.mask_path))
        assert mask.shape == (48, 48)
        assert mask.max() == 255
    # the seeded shots over the layout's training links are the shots over the dataset itself
    linked = datamodule.train_data.samples["image_path"].astype(str).tolist()
    for seed in (0, 1, 2):
        assert [Path(p).name for p in select_shots(linked, 4, seed)] == [
            Path(p).name for p in select_shots(train, 4, seed)
        ]
    development = {Path(r["source"]).name for r in manifest["images"]}
    assert not development & {Path(p).name for p in excluded_shots(train)}


def test_build_refuses_to_write_into_the_dataset(tmp_path: Path):
    train = _dataset(tmp_path)
    with pytest.raises(InvalidArgumentError, match="inside the dataset"):
        build_dev_split(train, tmp_path / "cat" / "train", "good", cap=10)
    with pytest.raises(InvalidArgumentError, match="inside the dataset"):
        build_dev_split(train, tmp_path / "cat", "dev", cap=10)
