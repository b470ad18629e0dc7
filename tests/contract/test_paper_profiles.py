"""The paper profiles build, train a step, score and export with raw OpenVINO parity (random weights, paper geometry).

One case per registered model whose case takes minutes on a 2-core CPU (``tests/contract/paper_profiles.py`` says
what runs); FDSL's paper profile (CLIP ViT-L/14-336 at 518 px) takes longer and is measured by the same code as a
benchmark: ``docs/benchmarks/paper_profiles.md``.
"""

from __future__ import annotations

import pytest

from anomalib_fewshot.models import REGISTRY
from tests.contract.paper_profiles import check, paper_arguments

pytestmark = pytest.mark.slow
#: Too slow for the suite here; measured in docs/benchmarks/paper_profiles.md instead.
BENCHMARK_ONLY = {"Fdsl"}


def test_benchmark_only_models_are_registered():
    assert set(REGISTRY) >= BENCHMARK_ONLY


@pytest.mark.parametrize("name", [name for name in REGISTRY if name not in BENCHMARK_ONLY])
def test_paper_profile_trains_scores_and_exports(name: str):
    arguments = paper_arguments(name)
    assert arguments["pre_trained"] is False and arguments["k_shot"] == 1
    row = check(name)
    assert row["finite_loss"] and row["gradients"] > 0 and row["finite_gradients"], row
    assert row["finite_outputs"], row
    assert row["parity_ok"], row["parity"]
