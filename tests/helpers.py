"""Shared test helpers: tiny model configurations and small generated datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Tiny, offline constructor arguments for every plugin model (random backbone weights, small dims, short
#: schedule). A model exported by ``anomalib_fewshot.models`` without an entry here fails the contract suite.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "Dfd": {
        "backbone": "tf_efficientnet_lite0",
        "layers": ["blocks.2", "blocks.4"],
        "pre_trained": False,
        "image_size": 64,
        "pretrain_embed_dim": 32,
        "target_embed_dim": 32,
        "gaussian_hidden_dim": 32,
        "perlin_num_heads": 2,
        "samples_per_shot": 6,
        "epochs": 2,
        "batch_size": 4,
        "k_shot": 2,
    },
    "Ed": {
        "backbone": "tf_efficientnet_lite0",
        "layers": ["blocks.2", "blocks.4"],
        "pre_trained": False,
        "image_size": 64,
        "d_models": [16, 32],
        "num_heads": 2,
        "num_layers": 2,
        "augment": "flip_rotate",
        "augment_copies": 2,
        "token_scale": "rms",
        "epochs": 2,
        "batch_size": 2,
        "k_shot": 2,
    },
    "Fdsl": {
        "backbone": "ViT-tiny",
        "vision_cfg": {"width": 32, "layers": 2, "head_width": 16, "patch_size": 8, "image_size": 64},
        "layers": [1, 2],
        "pre_trained": False,
        "image_size": 64,
        "head_dims": [16, 8],
        "window_size": 4,
        "window_stride": 2,
        "epochs": 2,
        "pseudo_samples": 8,
        "batch_size": 4,
        "k_shot": 2,
    },
    "Pcsnet": {
        "backbone": "tf_efficientnet_lite0",
        "layers": ["blocks.1", "blocks.2", "blocks.4"],
        "pre_trained": False,
        "image_size": 64,
        "resize_size": None,
        "grid_size": 16,
        "num_nearest": 8,
        "guide_channels": 32,
        "cas_dim": 16,
        "pyramid_bins": [15, 8, 4, 2],
        "epochs": 3,
        "k_shot": 2,
    },
}

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


def fit_tiny(name: str, data_root: Path, run_root: Path, category: str = "tiny", **overrides: Any) -> tuple[Any, Any]:
    """Fit the tiny configuration of plugin model ``name`` (seeded) on an MVTec-layout dataset.

    The per-model hook of the reliability suite: returns ``(model, engine)``; ``overrides`` replace entries of
    :data:`TINY_CONFIGS`.
    """
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    import anomalib_fewshot.models as plugin_models

    seed_everything(0, verbose=False)
    model = getattr(plugin_models, name)(**{**TINY_CONFIGS[name], **overrides})
    datamodule = MVTecAD(root=data_root, category=category, num_workers=0, train_batch_size=2, eval_batch_size=4)
    engine = Engine(default_root_dir=run_root, logger=False, enable_progress_bar=False, enable_model_summary=False)
    engine.fit(model, datamodule=datamodule)
    return model, engine
