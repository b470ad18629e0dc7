"""Bad-input matrix, file level: our safe reader converts or rejects every case; anomalib's reader for contrast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib.data.utils import read_image as anomalib_read_image

from anomalib_fewshot.components.io.images import ImageReadError, read_image, read_preview, scan_images

BROKEN = ("zero_byte", "truncated", "not_an_image")


@pytest.mark.parametrize("case", ["rgb", "grayscale", "rgba", "16bit", "tiny"])
def test_readable_cases_become_rgb_floats(bad_files: dict[str, Path], case: str):
    image = read_image(bad_files[case])
    assert image.dtype == torch.float32
    assert image.shape[0] == 3
    assert 0.0 <= float(image.min()) <= float(image.max()) <= 1.0


def test_8bit_reads_exactly_like_anomalib(bad_files: dict[str, Path]):
    for case in ("rgb", "grayscale", "rgba"):
        assert torch.equal(read_image(bad_files[case]), anomalib_read_image(bad_files[case], as_tensor=True))


def test_16bit_keeps_its_range(bad_files: dict[str, Path]):
    torch.testing.assert_close(read_image(bad_files["16bit"]), read_image(bad_files["grey8"]), atol=1e-6, rtol=0)


def test_previews_are_the_read_images_in_8_bits(bad_files: dict[str, Path]):
    """Heat-map overlays (demo gallery, saved heat-maps) show a 16-bit image as its grey levels, not white."""
    import numpy as np
    from PIL import Image

    with Image.open(bad_files["rgb"]) as rgb:
        assert np.array_equal(np.asarray(read_preview(bad_files["rgb"])), np.asarray(rgb.convert("RGB")))
    assert np.array_equal(np.asarray(read_preview(bad_files["16bit"])), np.asarray(read_preview(bad_files["grey8"])))


@pytest.mark.xfail(reason="anomalib A1: read_image clips 16-bit PNGs to 255 (almost white)", strict=True)
def test_anomalib_reads_16bit_correctly(bad_files: dict[str, Path]):
    grey16 = anomalib_read_image(bad_files["16bit"], as_tensor=True)
    torch.testing.assert_close(grey16, anomalib_read_image(bad_files["grey8"], as_tensor=True), atol=1e-2, rtol=0)


@pytest.mark.slow
def test_large_image_is_shrunk(bad_files: dict[str, Path]):
    image = read_image(bad_files["large"], max_side=512)
    assert tuple(image.shape) == (3, 410, 512)
    assert tuple(read_image(bad_files["large"]).shape) == (3, 4000, 5000)  # max_side=None keeps the size


@pytest.mark.parametrize("case", BROKEN)
def test_broken_files_name_the_file(bad_files: dict[str, Path], case: str):
    with pytest.raises(ImageReadError, match=bad_files[case].name):
        read_image(bad_files[case])


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "gone.png")


def test_scan_reports_every_broken_file_at_once(bad_files: dict[str, Path]):
    problems = scan_images(bad_files.values())
    assert len(problems) == len(BROKEN)
    for case in BROKEN:
        assert any(bad_files[case].name in p for p in problems)
