from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anomalib_fewshot.components.lifecycle.fewshot import (
    FewShotError,
    list_images,
    select_shot_indices,
    select_shots,
    validate_k_shot,
)


def test_selection_matches_documented_algorithm():
    paths = [f"/data/{i:03d}.png" for i in range(20)]
    expected_idx = sorted(torch.randperm(20, generator=torch.Generator().manual_seed(3))[:5].tolist())
    assert select_shots(paths, 5, 3) == [paths[i] for i in expected_idx]


def test_selection_ignores_input_order_and_is_deterministic():
    paths = [f"/data/{i:03d}.png" for i in range(30)]
    shuffled = list(reversed(paths))
    assert select_shots(paths, 4, 0) == select_shots(shuffled, 4, 0)
    assert select_shots(paths, 4, 0) == sorted(select_shots(paths, 4, 0))
    assert select_shots(paths, 4, 0) != select_shots(paths, 4, 1)


def test_none_keeps_everything():
    assert select_shot_indices(7, None, 0) == list(range(7))


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_invalid_k_shot(k):
    with pytest.raises(FewShotError, match="k_shot"):
        validate_k_shot(k)


def test_k_shot_larger_than_pool():
    with pytest.raises(FewShotError, match="larger than the number of normal"):
        select_shot_indices(3, 4, 0)
    with pytest.raises(FewShotError, match="no normal"):
        select_shot_indices(0, 1, 0)


def test_list_images(tmp_path: Path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.txt").write_text("x")
    assert list_images(tmp_path) == [str(tmp_path / "a.png")]
    with pytest.raises(FewShotError, match="does not exist"):
        list_images(tmp_path / "missing")
    with pytest.raises(FewShotError, match="missing file"):
        list_images([str(tmp_path / "nope.png")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FewShotError, match="holds no images"):
        list_images(empty)
