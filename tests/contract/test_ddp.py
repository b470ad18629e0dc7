"""k-shot selection is identical on every rank under Lightning DDP (CPU, 2 processes, subprocess script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import anomalib_fewshot.models as plugin_models

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("ddp_fit.py")


@pytest.mark.parametrize("name", plugin_models.__all__)
def test_ddp_ranks_train_on_the_same_shots(name: str, tmp_path: Path, tiny_data_root: Path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), name, str(tiny_data_root), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["shots"] == ranks[1]["shots"]
    assert len(ranks[0]["shots"]) == 2
    assert ranks[0]["steps"] > 0
