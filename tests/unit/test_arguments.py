"""The shared constructor-argument checks (anomalib_fewshot.components.lifecycle.arguments)."""

from __future__ import annotations

from typing import Literal

import pytest

from anomalib_fewshot.components.lifecycle.arguments import check_arguments
from anomalib_fewshot.errors import InvalidArgumentError


def _example(mode: Literal["a", "b"] = "a", steps: int = 1, weight: float = 0.5) -> None:
    del mode, steps, weight


def test_check_arguments_names_the_argument_and_its_bound():
    check_arguments(_example, {"mode": "b", "steps": 1, "weight": 0.0}, positive=("steps",), unit_interval=("weight",))
    check_arguments(_example, {"weight": 1.0}, unit_interval=("weight",))
    with pytest.raises(InvalidArgumentError, match=r"mode must be one of \('a', 'b'\), got 'c'"):
        check_arguments(_example, {"mode": "c"})
    with pytest.raises(InvalidArgumentError, match="steps must be >= 1, got 0"):
        check_arguments(_example, {"steps": 0}, positive=("steps",))
    for weight in (-0.1, 1.5):
        with pytest.raises(InvalidArgumentError, match=rf"weight must be in \[0, 1\], got {weight}"):
            check_arguments(_example, {"weight": weight}, unit_interval=("weight",))
