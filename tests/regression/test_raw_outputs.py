"""The committed raw-output fixture still holds: every model's raw scores and maps after a seeded tiny fit."""

from __future__ import annotations

import pytest

from anomalib_fewshot.benchmark.machine import cpu_name
from tests.regression import raw_outputs

pytestmark = pytest.mark.slow


def test_raw_outputs_equal_the_committed_fixture():
    recorded = raw_outputs.load_recording(raw_outputs.FIXTURE)
    if recorded["machine"] != cpu_name():
        pytest.skip(f"fixture recorded on {recorded['machine']}, this is {cpu_name()}: kernels may differ")
    assert set(recorded["outputs"]) == {case for case, _, _ in raw_outputs.CASES}
    assert raw_outputs.compare(recorded["outputs"], raw_outputs.raw_outputs(), rtol=1e-5) == 0
