"""Shared test helpers: tiny model configurations and small generated datasets."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from anomalib_fewshot.models import REGISTRY

#: Tiny, offline constructor arguments for every registered plugin model (random backbone weights, small dims,
#: short schedule), from each model's spec (``ModelSpec.tiny_config``); copies, so a test cannot change a spec.
TINY_CONFIGS: dict[str, dict[str, Any]] = {name: copy.deepcopy(spec.tiny_config) for name, spec in REGISTRY.items()}

TINY_IMAGE_SIZE = 64


def make_tiny_dataset(root: Path, category: str = "tiny") -> Path:
    """A small MVTec-layout dataset (64 px) for fast contract tests."""
    from anomalib_fewshot.data.demo import make_demo_dataset

    return make_demo_dataset(root, category, n_train=4, n_test_good=3, n_test_defect=3, size=TINY_IMAGE_SIZE, seed=1)


def cli_model_args(name: str) -> list[str]:
    """``--model.<arg> <value>`` pairs for the stock anomalib CLI."""
    args = []
    for key, value in TINY_CONFIGS[name].items():
        if isinstance(value, dict):
            value = json.dumps(value)
        elif isinstance(value, list):
            value = "[" + ",".join(str(v) for v in value) + "]"
        elif value is None:
            value = "null"
        args += [f"--model.{key}", str(value)]
    return args


def fit_tiny(
    name: str,
    data_root: Path,
    run_root: Path,
    category: str = "tiny",
    engine_kwargs: dict[str, Any] | None = None,
    **overrides: Any,
) -> tuple[Any, Any]:
    """Fit the tiny configuration of plugin model ``name`` (seeded) on an MVTec-layout dataset.

    The per-model hook of the reliability suite: returns ``(model, engine)``; ``overrides`` replace entries of
    :data:`TINY_CONFIGS`, ``engine_kwargs`` are added to the Engine's arguments.
    """
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    import anomalib_fewshot.models as plugin_models

    seed_everything(0, verbose=False)
    model = getattr(plugin_models, name)(**{**TINY_CONFIGS[name], **overrides})
    datamodule = MVTecAD(root=data_root, category=category, num_workers=0, train_batch_size=2, eval_batch_size=4)
    engine = Engine(
        default_root_dir=run_root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **(engine_kwargs or {}),
    )
    engine.fit(model, datamodule=datamodule)
    return model, engine


def write_fake_grid(
    tmp_path: Path, models: list[dict[str, Any]] | None = None, grid: dict[str, Any] | None = None, **extra: Any
) -> Path:
    """A benchmark grid YAML of fake jobs in ``tmp_path``: dataset ``d``, k = 1, seeds 0-2 (runner tests).

    ``models`` default to one ``Dfd`` variant ``v``; ``grid`` entries extend the ``grid:`` section, ``extra`` the top.
    """
    import yaml

    config = {
        "output": str(tmp_path / "out"),
        "grid": {
            "models": models or [{"model": "Dfd", "variant": "v", "profile": "p"}],
            "datasets": [{"name": "d", "root": "x", "category": "c"}],
            "k_shot": [1],
            "seeds": [0, 1, 2],
            **(grid or {}),
        },
        **extra,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


#: Tolerance of a raw-output parity check, relative to the expected output's range (raw maps have any scale).
RAW_PARITY_RTOL = 1e-3


def raw_outputs(model: Any, images: Any) -> Any:
    """``model.model(pre_processor(images))``: score and map before post-processing (eval mode, no gradient).

    Tests compare these: the post-processor's clamp at 0 and 1 could make two models agree while these differ.
    """
    import torch

    model.eval()
    with torch.no_grad():
        return model.model(model.pre_processor.transform(images))


def assert_close_to_range(got: Any, expected: Any, rtol: float = RAW_PARITY_RTOL) -> None:
    """``got`` equals ``expected`` within ``rtol`` times the range of ``expected`` (raw scores and maps)."""
    import numpy as np

    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    span = float(expected.max() - expected.min())
    assert span > 0, "a constant expected output cannot show a parity error"
    np.testing.assert_allclose(got, expected, rtol=0, atol=rtol * span)
